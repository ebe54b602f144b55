"""Every option of one GateLoop layer, declared, typed and validated in one place.

``GateLoop(d_model, options)`` (or ``GateLoop(d_model, n_head=4, ...)``, the same fields as
keywords) builds a layer from a ``GateLoopOptions``; ``GateLoopConfig`` keeps the same fields flat
(its saved ``config.json``, its ``--model.*`` flags and the HF config keys are those names) and
hands them over as ``config.layer_options()``, so a model and a layer are validated by the one
``GateLoopOptions.validate``. The fixed-transition special cases of paper §3.1 are option sets
(``TRANSITION_PRESETS``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal

from gateloop._validation import check_choice, check_positive_int
from gateloop.config_utils import check_field_types
from gateloop.layers.transitions import (
    MAGNITUDE_ACTIVATIONS,
    PHASE_ACTIVATIONS,
    TWO_PI,
    MagnitudeActivation,
    PhaseActivation,
)
from gateloop.ops.gate_loop import MODES, Mode

TransitionInit = Literal["uniform", "ring", "s4d_lin", "retnet"]
TRANSITION_INITS: tuple[str, ...] = typing.get_args(TransitionInit)
LAYER_MODES = tuple(m for m in MODES if m != "softmax")  # softmax attention is another model


@dataclass(frozen=True)
class GateLoopOptions:
    """The options of one GateLoop time-mixing layer (paper §4, eq 24).

    Args:
        d_qk, d_v: total key and value widths (None: d_model); divisible by n_head.
        n_head: number of heads.
        magnitude_activation: "sigmoid" (paper), "exp_exp" (LRU: exp(-exp(α))), "none" (|a| = 1).
        phase_activation: "identity" (paper), "exp" (LRU), "none" (real transitions).
        data_controlled: True (paper): α, β are projections of x. False: one learned α, β per
            channel, independent of the input (the paper's "fixed" baseline).
        per_head_transition: one transition per head instead of one per key dim.
        transition_init: "uniform" (|a| ~ U(magnitude_init), phase ~ U(±phase_init_max)),
            "ring" (LRU: |a|² uniform in the ring, phase ~ U(0, phase_init_max)), "s4d_lin"
            (S4D-Lin: a = exp(Δ(-1/2 + iπn)), Δ log-uniform in [1e-3, 1e-1]), "retnet"
            (γ_h = 1 - 2^(-5-h) per head, θ_n = 10000^(-n/dk) per key dim).
        magnitude_init, phase_init_max: ranges used by the "uniform" and "ring" inits.
        trainable_transitions: False freezes fixed transitions (RetNet); only for data_controlled=False.
        mode, chunk_size: how the op computes (see ``gateloop.ops.gate_loop``).
        output_gate: extension, not in the paper: y <- y ⊙ silu(W_g x) before the output projection.
        group_norm: extension, not in the paper: per-head GroupNorm of y.
        bias: biases on the q, k, v and output projections (the α, β projections always have one).
    """

    d_qk: int | None = None
    d_v: int | None = None
    n_head: int = 1
    magnitude_activation: MagnitudeActivation = "sigmoid"
    phase_activation: PhaseActivation = "identity"
    data_controlled: bool = True
    per_head_transition: bool = False
    transition_init: TransitionInit = "uniform"
    # initial |a| range: memories of ~10 to ~1000 tokens (the paper states no init)
    magnitude_init: tuple[float, float] = (0.9, 0.999)
    # initial phases in ±π/10: slow rotations, so early training is close to a real decay
    phase_init_max: float = 0.1 * math.pi
    trainable_transitions: bool = True
    mode: Mode = "chunk"
    chunk_size: int | None = None
    output_gate: bool = False  # extension, off in the paper's runs
    group_norm: bool = False  # extension, off in the paper's runs
    bias: bool = False

    @classmethod
    def of(cls, options: GateLoopOptions | None, fields: dict[str, Any]) -> GateLoopOptions:
        """``options`` (default: every default) with ``fields`` set; an unknown field is a
        ``TypeError`` that lists the valid ones."""
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"options must be a GateLoopOptions, got {type(options).__name__}")
        unknown = sorted(set(fields) - set(field_names()))
        if unknown:
            raise TypeError(
                f"GateLoop got unknown option(s) {', '.join(map(repr, unknown))}; "
                f"its options are {', '.join(field_names())}"
            )
        if isinstance(fields.get("magnitude_init"), list):  # a JSON pair, as configs read them
            fields = {**fields, "magnitude_init": tuple(fields["magnitude_init"])}
        return dataclasses.replace(options or cls(), **fields)

    def validate(self, d_model: int) -> None:
        """``TypeError`` / ``ValueError`` naming the first option that is wrong for a layer of
        width ``d_model``."""
        check_field_types(self)
        check_positive_int("d_model", d_model)
        check_positive_int("n_head", self.n_head)
        for name in ("d_qk", "d_v", "chunk_size"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        for name, value in (("d_qk", self.d_qk or d_model), ("d_v", self.d_v or d_model)):
            if value % self.n_head:
                raise ValueError(f"{name} = {value} is not divisible by n_head = {self.n_head}")
        check_choice("magnitude_activation", self.magnitude_activation, MAGNITUDE_ACTIVATIONS)
        check_choice("phase_activation", self.phase_activation, PHASE_ACTIVATIONS)
        check_choice("transition_init", self.transition_init, TRANSITION_INITS)
        check_choice("mode", self.mode, LAYER_MODES)
        low, high = self.magnitude_init
        if not 0 < low <= high < 1:
            raise ValueError(f"magnitude_init must satisfy 0 < low <= high < 1, got {self.magnitude_init}")
        if not self.phase_init_max >= 0:
            raise ValueError(f"phase_init_max must be >= 0, got {self.phase_init_max}")
        if not self.trainable_transitions and self.data_controlled:
            raise ValueError("trainable_transitions=False needs data_controlled=False (fixed transitions)")
        if self.transition_init == "s4d_lin" and self.phase_activation not in ("identity", "none"):
            raise ValueError(
                f"transition_init='s4d_lin' needs phase_activation 'identity', got {self.phase_activation!r}"
            )


def field_names() -> tuple[str, ...]:
    """The option names, in declaration order (``GateLoopConfig`` has each under the same name)."""
    return tuple(f.name for f in dataclasses.fields(GateLoopOptions))


# The fixed-transition special cases of paper §3.1 as option sets (GateLoop.retnet_like & co. and
# GateLoopConfig.with_transition_preset read them from here).
TRANSITION_PRESETS: dict[str, dict[str, object]] = {
    "retnet_like": {
        "data_controlled": False,
        "trainable_transitions": False,
        "transition_init": "retnet",
        "magnitude_activation": "sigmoid",
        "phase_activation": "identity",
    },
    "lru_like": {
        "data_controlled": False,
        "transition_init": "ring",
        "magnitude_activation": "exp_exp",
        "phase_activation": "exp",
        "magnitude_init": (0.9, 0.999),
        "phase_init_max": TWO_PI,
    },
    "s4d_like": {
        "data_controlled": False,
        "transition_init": "s4d_lin",
        "magnitude_activation": "exp_exp",
        "phase_activation": "identity",
    },
}
