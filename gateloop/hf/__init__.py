"""Hugging Face ``transformers`` integration (the ``[hf]`` extra): configs, causal-LM classes,
the generation cache and conversion of gateloop runs. Importing it registers the models with
``AutoConfig`` and ``AutoModelForCausalLM``:

    import gateloop.hf
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("runs/my-run-hf")

The core ``import gateloop`` never imports transformers; only this package does.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM

from gateloop.hf.cache import GateLoopCache
from gateloop.hf.configuration import GateLoopHFConfig, GateLoopTransformerHFConfig
from gateloop.hf.modeling import GateLoopForCausalLM, GateLoopTransformerForCausalLM


def register() -> None:
    """Register both models with the Auto classes (idempotent: ``exist_ok=True``)."""
    for config_class, model_class in (
        (GateLoopHFConfig, GateLoopForCausalLM),
        (GateLoopTransformerHFConfig, GateLoopTransformerForCausalLM),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)


register()

__all__ = [
    "GateLoopCache",
    "GateLoopForCausalLM",
    "GateLoopHFConfig",
    "GateLoopTransformerForCausalLM",
    "GateLoopTransformerHFConfig",
    "register",
]
