"""Dataclass configs for the GateLoop LM and the Transformer baseline, with the paper's presets."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from gateloop._validation import check_choice, check_positive_int
from gateloop.config_utils import check_field_types, dataclass_from_dict
from gateloop.file_errors import read_json_object
from gateloop.layers.feed_forward import FFN_ACTIVATIONS
from gateloop.layers.gate_loop_options import (
    TRANSITION_PRESETS,
    GateLoopOptions,
    MagnitudeActivation,
    Mode,
    PhaseActivation,
    TransitionInit,
)
from gateloop.layers.gate_loop_options import field_names as layer_option_names

C = TypeVar("C", bound="ModelConfig")

NORM_POSITIONS = ("pre", "post")


@dataclass
class ModelConfig:
    """Fields shared by every model of the harness (embedding, blocks, head)."""

    model_type: ClassVar[str] = "base"

    vocab_size: int = 50257
    # None: the head predicts the input vocabulary (an LM). Set it for a tagger whose output
    # vocabulary differs from the input one (Memory Horizon: 6 input ids, 50 output classes).
    output_vocab_size: int | None = None
    d_model: int = 624
    n_layer: int = 12
    d_channel_mixing: int = 1872
    # "pre" (default: stable without warm-up tricks) or "post" (Vaswani et al.); the paper only
    # says "skip connections and layer normalization"
    norm_position: str = "pre"
    ffn_activation: str = "gelu"
    dropout: float = 0.0
    # tied input embedding and LM head; off for the paper's 125M count (untied head)
    tie_embeddings: bool = False

    @property
    def head_vocab_size(self) -> int:
        return self.vocab_size if self.output_vocab_size is None else self.output_vocab_size

    def validate(self) -> None:
        check_field_types(self)
        for name in ("vocab_size", "d_model", "n_layer", "d_channel_mixing"):
            check_positive_int(name, getattr(self, name))
        if self.output_vocab_size is not None and self.output_vocab_size < 1:
            raise ValueError(
                f"output_vocab_size must be a positive int or None, got {self.output_vocab_size!r}"
            )
        check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        check_choice("ffn_activation", self.ffn_activation, FFN_ACTIVATIONS)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.tie_embeddings and self.head_vocab_size != self.vocab_size:
            raise ValueError(
                f"tie_embeddings=True needs output_vocab_size == vocab_size, got {self.output_vocab_size} "
                f"vs {self.vocab_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"config is for model_type {model_type!r}, not {cls.model_type!r}")
        return dataclass_from_dict(cls, data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        return cls.from_dict(read_json_object(path, "a model config"))


@dataclass
class GateLoopConfig(ModelConfig):
    """A GateLoop LM (paper App. C). Defaults are the WikiText-103 model of Table 4."""

    model_type: ClassVar[str] = "gateloop"

    # The layer's options, flat (config.json, --model.* flags and HF keys use these names): the
    # same names, types and defaults as GateLoopOptions, which documents and validates them (but
    # n_head: 624 SISO heads here, the paper's model; one head for a bare layer).
    d_qk: int | None = None  # total key width over all heads; None: d_model
    d_v: int | None = None  # total value width over all heads; None: d_model
    n_head: int = 624
    magnitude_activation: MagnitudeActivation = "sigmoid"
    phase_activation: PhaseActivation = "identity"
    data_controlled: bool = True
    per_head_transition: bool = False
    transition_init: TransitionInit = "uniform"
    magnitude_init: tuple[float, float] = (0.9, 0.999)
    phase_init_max: float = field(default=0.1 * math.pi)
    trainable_transitions: bool = True
    mode: Mode = "chunk"
    chunk_size: int | None = None
    output_gate: bool = False  # extension, off in the paper's runs
    group_norm: bool = False  # extension, off in the paper's runs
    bias: bool = False

    def validate(self) -> None:
        super().validate()
        self.layer_options().validate(self.d_model)

    def layer_options(self) -> GateLoopOptions:
        """The options of each of this model's time-mixing layers."""
        return GateLoopOptions(**self.layer_kwargs())

    def layer_kwargs(self) -> dict[str, Any]:
        """The layer's options as keyword arguments of ``gateloop.layers.GateLoop``."""
        return {name: getattr(self, name) for name in layer_option_names()}

    def with_transition_preset(self, name: str) -> GateLoopConfig:
        """A copy with the option set of a fixed-transition preset (``TRANSITION_PRESETS``:
        retnet_like, lru_like, s4d_like); every other field is kept."""
        check_choice("transition preset", name, TRANSITION_PRESETS)
        config = dataclasses.replace(self, **TRANSITION_PRESETS[name])
        config.validate()
        return config

    # ---------------------------------------------------------------- presets
    @classmethod
    def memory_horizon(cls, **overrides: Any) -> GateLoopConfig:
        """Paper Table 3: 4 layers, d_model 64, FFN 128, d_qk = d_v = 64 over 64 heads (SISO);
        6 input ids (numbers 0-4 and the reset token), 50 output classes."""
        base = {
            "vocab_size": 6,
            "output_vocab_size": 50,
            "d_model": 64,
            "n_layer": 4,
            "d_channel_mixing": 128,
            "d_qk": 64,
            "d_v": 64,
            "n_head": 64,
        }
        return _build(cls, base, overrides)

    @classmethod
    def wikitext103_125m(cls, **overrides: Any) -> GateLoopConfig:
        """Paper Table 4: 12 layers, d_model 624, FFN 1872, 624 SISO heads, GPT-2 vocabulary,
        untied head (~119M parameters; the paper reports 125M)."""
        base = {
            "vocab_size": 50257,
            "d_model": 624,
            "n_layer": 12,
            "d_channel_mixing": 1872,
            "d_qk": 624,
            "d_v": 624,
            "n_head": 624,
        }
        return _build(cls, base, overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> GateLoopConfig:
        """A few-thousand-parameter model for tests: 2 layers, d_model 32, 4 heads of 8x8 states."""
        base = {"vocab_size": 97, "d_model": 32, "n_layer": 2, "d_channel_mixing": 64, "n_head": 4}
        return _build(cls, base, overrides)


@dataclass
class TransformerConfig(ModelConfig):
    """The causal softmax-attention baseline (same embedding, FFN and norms as GateLoop)."""

    model_type: ClassVar[str] = "transformer"

    n_head: int = 12
    # rotary position embedding base (RoFormer); rotary needs no maximum length
    rope_base: float = 10000.0
    bias: bool = False

    def validate(self) -> None:
        super().validate()
        check_positive_int("n_head", self.n_head)
        if self.d_model % self.n_head:
            raise ValueError(f"d_model = {self.d_model} is not divisible by n_head = {self.n_head}")
        if (self.d_model // self.n_head) % 2:
            raise ValueError(f"rotary embeddings need an even head dim, got {self.d_model // self.n_head}")

    @classmethod
    def wikitext103_125m(cls, **overrides: Any) -> TransformerConfig:
        """GPT-2 small sized (the paper's 125M Transformer): 12 layers, d_model 768, 12 heads,
        FFN 3072, tied embeddings."""
        base = {
            "vocab_size": 50257,
            "d_model": 768,
            "n_layer": 12,
            "d_channel_mixing": 3072,
            "n_head": 12,
            "tie_embeddings": True,
        }
        return _build(cls, base, overrides)

    @classmethod
    def memory_horizon(cls, **overrides: Any) -> TransformerConfig:
        base = {
            "vocab_size": 6,
            "output_vocab_size": 50,
            "d_model": 64,
            "n_layer": 4,
            "d_channel_mixing": 128,
            "n_head": 4,
        }
        return _build(cls, base, overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> TransformerConfig:
        base = {"vocab_size": 97, "d_model": 32, "n_layer": 2, "d_channel_mixing": 64, "n_head": 4}
        return _build(cls, base, overrides)


def _build(cls: type[C], base: dict[str, Any], overrides: dict[str, Any]) -> C:
    return cls.from_dict({**base, **overrides})
