"""The model families, one table: ``model_type`` -> (config class, model class).

Everything that maps a model type to a class derives from ``MODEL_FAMILIES``: building a model
from a config (``build_model``), loading a run's weights (``model_class(config).from_pretrained``),
reading a saved ``config.json`` (``config_class(model_type)``) and the Hugging Face export
(``gateloop.hf`` keys its classes by the same ``model_type``).

Adding a model family touches one module, the new model with its config (a ``ModelConfig``
subclass with its own ``model_type`` and a ``CausalModel`` subclass), and one entry here::

    MODEL_FAMILIES = _table(
        ModelFamily(GateLoopConfig, GateLoopLM),
        ModelFamily(TransformerConfig, TransformerLM),
        ModelFamily(MambaConfig, MambaLM),  # the new family
    )

(Its Hugging Face form, if wanted, is one more config and causal-LM class pair in ``gateloop.hf``.)
No transformers import here: this module is on the core import path.

Example:
    >>> from gateloop.models import GateLoopConfig
    >>> model_class(GateLoopConfig.tiny()).__name__, config_class("transformer").__name__
    ('GateLoopLM', 'TransformerConfig')
    >>> sorted(MODEL_FAMILIES)
    ['gateloop', 'transformer']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gateloop.file_errors import read_json_object
from gateloop.models.base import CausalModel
from gateloop.models.config import GateLoopConfig, ModelConfig, TransformerConfig
from gateloop.models.gateloop_lm import GateLoopLM
from gateloop.models.pretrained import CONFIG_NAME
from gateloop.models.transformer import TransformerLM


@dataclass(frozen=True)
class ModelFamily:
    """A config class and the model class it builds (keyed by ``config_class.model_type``)."""

    config_class: type[ModelConfig]
    model_class: type[CausalModel]

    @property
    def model_type(self) -> str:
        return self.config_class.model_type


def _table(*families: ModelFamily) -> dict[str, ModelFamily]:
    """``{model_type: family}``; ValueError when two families claim one ``model_type``."""
    table: dict[str, ModelFamily] = {}
    for family in families:
        if family.model_type in table:
            raise ValueError(f"model_type {family.model_type!r} is claimed by two model families")
        table[family.model_type] = family
    return table


MODEL_FAMILIES: dict[str, ModelFamily] = _table(
    ModelFamily(GateLoopConfig, GateLoopLM),
    ModelFamily(TransformerConfig, TransformerLM),
)


def family(model_type: object) -> ModelFamily:
    """The family of ``model_type``; ValueError naming the value and the valid types otherwise."""
    if not isinstance(model_type, str) or model_type not in MODEL_FAMILIES:
        raise ValueError(f"model_type must be one of {sorted(MODEL_FAMILIES)}, got {model_type!r}")
    return MODEL_FAMILIES[model_type]


def config_class(model_type: str) -> type[ModelConfig]:
    """The config class of ``model_type`` (as a saved ``config.json`` records it)."""
    return family(model_type).config_class


def model_class(config: ModelConfig) -> type[CausalModel]:
    """The model ``config`` builds (``GateLoopLM`` for a ``GateLoopConfig``, ...); ValueError for a
    config of no registered family."""
    # getattr: anything else passed (a dict, a path) gets this ValueError, not an AttributeError
    found = MODEL_FAMILIES.get(getattr(config, "model_type", None))
    if found is None or not isinstance(config, found.config_class):
        valid = ", ".join(f.config_class.__name__ for f in MODEL_FAMILIES.values())
        raise ValueError(f"config must be one of {valid}, got {type(config).__name__}")
    return found.model_class


def build_model(config: ModelConfig) -> CausalModel:
    """A freshly initialised model of ``config``'s family (the caller seeds the RNG)."""
    return model_class(config)(config)


def load_pretrained(
    directory: str | Path, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> CausalModel:
    """The model a ``save_pretrained`` directory holds, of whichever family its config.json names."""
    saved = read_json_object(Path(directory) / CONFIG_NAME, "a gateloop model config")
    return family(saved.get("model_type")).model_class.from_pretrained(directory, device=device, dtype=dtype)


__all__ = [
    "MODEL_FAMILIES",
    "ModelFamily",
    "build_model",
    "config_class",
    "family",
    "load_pretrained",
    "model_class",
]
