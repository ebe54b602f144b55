"""Hugging Face ``transformers`` integration (the ``[hf]`` extra): configs, causal-LM classes,
the generation cache and conversion of gateloop runs. Importing it registers the models with
``AutoConfig``, ``AutoModelForCausalLM`` and (the base models) ``AutoModel``:

    import gateloop.hf
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("runs/my-run-hf")

The core ``import gateloop`` never imports transformers; only this package does.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from gateloop.hf.cache import GateLoopCache
from gateloop.hf.configuration import GateLoopHFConfig, GateLoopTransformerHFConfig
from gateloop.hf.modeling import (
    HF_BASE_MODELS,
    HF_MODELS,
    GateLoopForCausalLM,
    GateLoopModel,
    GateLoopTransformerForCausalLM,
    GateLoopTransformerModel,
)


def register() -> None:
    """Register every model of ``HF_MODELS`` (one per model family of the registry that has a
    Hugging Face form) with the Auto classes (idempotent: ``exist_ok=True``)."""
    for model_class in HF_MODELS.values():
        config_class = model_class.config_class
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)
    for model_type, base_class in HF_BASE_MODELS.items():
        AutoModel.register(HF_MODELS[model_type].config_class, base_class, exist_ok=True)


register()

__all__ = [
    "GateLoopCache",
    "GateLoopForCausalLM",
    "GateLoopHFConfig",
    "GateLoopModel",
    "GateLoopTransformerForCausalLM",
    "GateLoopTransformerHFConfig",
    "GateLoopTransformerModel",
    "register",
]
