"""``PreTrainedConfig`` classes for the GateLoop LM and the Transformer baseline.

Hugging Face's standard names hold the shared shape fields (``hidden_size`` = ``d_model``,
``num_hidden_layers`` = ``n_layer``, ``intermediate_size`` = ``d_channel_mixing``,
``num_attention_heads`` = ``n_head``, ``tie_word_embeddings`` = ``tie_embeddings``,
``vocab_size``); every other field of our config (``magnitude_activation``, ``mode``, ...) is kept
under its own name. ``to_native()`` gives our ``GateLoopConfig`` / ``TransformerConfig`` back,
validated, so the HF model is built by our own model code.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from transformers import PreTrainedConfig

from gateloop.models.config import GateLoopConfig, ModelConfig, TransformerConfig
from gateloop.models.registry import config_class

# our field -> Hugging Face's standard name
STANDARD_NAMES = {
    "d_model": "hidden_size",
    "n_layer": "num_hidden_layers",
    "d_channel_mixing": "intermediate_size",
    "n_head": "num_attention_heads",
    "tie_embeddings": "tie_word_embeddings",
}
# version of this config.json layout; a file from a newer gateloop is refused, never misread
HF_FORMAT = 1


# our fields stored under Hugging Face's dataclass fields (the standard names and vocab_size)
HF_FIELDS = ("vocab_size", *STANDARD_NAMES)


class _NativeBackedConfig(PreTrainedConfig):
    """What both configs share: the standard fields and the mapping to and from our config.

    A field left out (None) takes our config class's default, so ``Config()`` is our default model.
    """

    native_class: ClassVar[type[ModelConfig]] = ModelConfig

    vocab_size: int | None = None
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    tie_word_embeddings: bool | None = None
    use_cache: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    gateloop_format: int = HF_FORMAT

    def __post_init__(self, **kwargs: Any) -> None:
        self._check_layout(kwargs)
        defaults = self.native_class()
        for name in self._native_fields():
            if name in HF_FIELDS:
                standard = STANDARD_NAMES.get(name, name)
                if getattr(self, standard) is None:
                    setattr(self, standard, getattr(defaults, name))
            else:
                setattr(self, name, kwargs.pop(name, getattr(defaults, name)))
        super().__post_init__(**kwargs)
        self.to_native()  # a bad option fails at load time, naming the field

    def _check_layout(self, kwargs: dict[str, Any]) -> None:
        """Refuse a newer layout version, and gateloop's own checkpoint config (same model_type)."""
        version = self.gateloop_format
        if isinstance(version, bool) or not isinstance(version, int) or version > HF_FORMAT:
            raise ValueError(
                f"{self.model_type} config has gateloop_format {version!r}; this gateloop reads format "
                f"{HF_FORMAT} and older: upgrade gateloop to load it"
            )
        if "d_model" in kwargs:
            raise ValueError(
                "this config.json is gateloop's own checkpoint layout (d_model, n_layer, ...), not the "
                "Hugging Face one: load it with GateLoopLM.from_pretrained / TransformerLM.from_pretrained, "
                "or convert it with `gateloop convert to-hf --run DIR --out HF_DIR`"
            )

    def _native_fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.native_class)]

    def to_native(self) -> ModelConfig:
        """Our config (``GateLoopConfig`` / ``TransformerConfig``), validated: a bad value names the field."""
        values = {name: getattr(self, STANDARD_NAMES.get(name, name)) for name in self._native_fields()}
        return self.native_class.from_dict(values)

    @classmethod
    def from_native(cls, config: ModelConfig, **extra: Any) -> _NativeBackedConfig:
        """The HF config of our ``config`` (``extra``: HF fields such as ``eos_token_id``)."""
        if not isinstance(config, cls.native_class):
            raise TypeError(f"config must be a {cls.native_class.__name__}, got {type(config).__name__}")
        values = {STANDARD_NAMES.get(k, k): v for k, v in config.to_dict().items() if k != "model_type"}
        return cls(**values, **extra)


class GateLoopHFConfig(_NativeBackedConfig):
    """Hugging Face config of ``gateloop.models.GateLoopLM`` (``model_type = "gateloop"``).

    Example:
        >>> config = GateLoopHFConfig.from_native(GateLoopConfig.tiny())
        >>> config.hidden_size, config.num_hidden_layers, config.magnitude_activation
        (32, 2, 'sigmoid')
        >>> config.to_native() == GateLoopConfig.tiny()
        True
    """

    model_type = "gateloop"
    native_class: ClassVar[type[ModelConfig]] = GateLoopConfig


class GateLoopTransformerHFConfig(_NativeBackedConfig):
    """Hugging Face config of the baseline ``gateloop.models.TransformerLM``
    (``model_type = "gateloop_transformer"``)."""

    model_type = "gateloop_transformer"
    native_class: ClassVar[type[ModelConfig]] = TransformerConfig


def _by_native_type(*classes: type[_NativeBackedConfig]) -> dict[str, type[_NativeBackedConfig]]:
    """``{native model_type: HF config class}``; each ``native_class`` must be the registry's config
    class of its model_type (``gateloop.models.registry``), so the HF side cannot drift from it."""
    table: dict[str, type[_NativeBackedConfig]] = {}
    for hf_class in classes:
        model_type = hf_class.native_class.model_type
        if config_class(model_type) is not hf_class.native_class:
            raise ValueError(
                f"{hf_class.__name__}.native_class is {hf_class.native_class.__name__}, but the model "
                f"registry gives {config_class(model_type).__name__} for model_type {model_type!r}"
            )
        table[model_type] = hf_class
    return table


# keyed by our model_type (the registry's), not by the HF one ("gateloop_transformer")
HF_CONFIGS: dict[str, type[_NativeBackedConfig]] = _by_native_type(
    GateLoopHFConfig, GateLoopTransformerHFConfig
)
