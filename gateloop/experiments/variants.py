"""One vocabulary of model variants for every task, as data: each a family (GateLoop or
Transformer), the GateLoop options it sets, and whether it uses multi-dimensional heads.

Every variant is derived from one base GateLoop config (a task preset's model with the user's
``--model.*`` overrides): the options are applied on top of it, and ``parameter_matching`` then
widens the FFN of a variant with fewer parameters so that every variant is within 5 % of the
base's count. The ablation grid (``--variants``) offers every variant; a task's own model flag
offers some of them under the names the paper uses for that experiment (``TASK_NAMES``):
Memory Horizon's ``--variant data-controlled`` is ``gateloop``, language modelling's ``--model
gateloop-fixed`` is ``fixed``.

Head shapes: the paper's models use SISO heads (one key and one value dim per head, so one
transition per key dim and one per head coincide). Variants whose point needs several key dims per
head, one transition per head, RetNet's per-key-dim rotations under a per-head decay, and S4D-Lin's
imaginary parts ``πn`` over a head's n state dims (with one key dim, n = 0 and S4D-Lin is real),
use heads of the task's ``head_dim``; the ``multi-head`` variant is GateLoop with those heads,
their control. The Transformer's heads are of ``head_dim`` too.

Adding a variant is one entry of ``VARIANTS``; every task's grid offers it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateloop.experiments.run_config import heads_of, transformer_like
from gateloop.models.config import TRANSITION_PRESETS, GateLoopConfig, ModelConfig, TransformerConfig


@dataclass(frozen=True)
class Variant:
    """One model variant of the ablation grid."""

    description: str
    family: str = "gateloop"  # "gateloop" or "transformer"
    options: Mapping[str, Any] = field(default_factory=dict)  # GateLoopConfig fields set on the base
    multi_head: bool = False  # heads of the task's head_dim instead of the base's heads


VARIANTS: dict[str, Variant] = {
    "gateloop": Variant(
        "paper: complex, data-controlled, one transition per key dim", options={"data_controlled": True}
    ),
    "real": Variant(
        "real transitions (phase none), data-controlled",
        options={"phase_activation": "none", "data_controlled": True},
    ),
    "fixed": Variant(
        "complex, fixed (input-independent α, β: the paper's 'fixed')", options={"data_controlled": False}
    ),
    "real-fixed": Variant("real, fixed", options={"data_controlled": False, "phase_activation": "none"}),
    "multi-head": Variant(
        "complex, data-controlled, per key dim, heads of head_dim",
        options={"data_controlled": True},
        multi_head=True,
    ),
    "per-head": Variant(
        "complex, data-controlled, one transition per head, heads of head_dim",
        options={"per_head_transition": True, "data_controlled": True},
        multi_head=True,
    ),
    "retnet-like": Variant(
        "GateLoop.retnet_like: frozen per-head decay, xPos rotations, heads of head_dim",
        options=TRANSITION_PRESETS["retnet_like"],
        multi_head=True,
    ),
    "lru-like": Variant(
        "GateLoop.lru_like: trained input-independent exp(-exp(ν) + i exp(θ)), ring init",
        options=TRANSITION_PRESETS["lru_like"],
    ),
    "s4d-like": Variant(
        "GateLoop.s4d_like: trained S4D-Lin exp(Δ(-1/2 + iπn)), heads of head_dim",
        options=TRANSITION_PRESETS["s4d_like"],
        multi_head=True,
    ),
    "transformer": Variant("causal softmax attention, rotary positions, heads of head_dim", "transformer"),
}


# the variants a task's own model flag offers, under its names: {task: {flag choice: variant}}
TASK_NAMES: dict[str, dict[str, str]] = {
    "memory-horizon": {"data-controlled": "gateloop", "fixed": "fixed"},
    "lm": {"gateloop": "gateloop", "gateloop-fixed": "fixed", "transformer": "transformer"},
}


def task_name(task: str, model: ModelConfig) -> str:
    """The choice of ``task``'s model flag that ``model`` is: the run's label (its directory
    name, its eval.json). A Transformer is ``transformer``; a GateLoop model the name of
    ``gateloop`` or ``fixed`` by its control."""
    if isinstance(model, TransformerConfig):
        return "transformer"
    variant = "gateloop" if getattr(model, "data_controlled", True) else "fixed"
    return next(name for name, v in TASK_NAMES[task].items() if v == variant)


def check_variants(names: list[str]) -> list[str]:
    """``names`` if every one is a variant; else a ``ValueError`` listing the valid ones."""
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(
            f"--variants: unknown {', '.join(map(repr, unknown))}; valid variants are {', '.join(VARIANTS)}"
        )
    if not names:
        raise ValueError(f"--variants: give at least one of {', '.join(VARIANTS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--variants: {names} names a variant twice")
    return names


def variant_model(base: GateLoopConfig, name: str, head_dim: int) -> ModelConfig:
    """The model config of variant ``name`` derived from ``base`` (before parameter matching)."""
    check_variants([name])
    variant = VARIANTS[name]
    if variant.family == "transformer":
        if base.d_model % 2:  # rotary embeddings rotate pairs of dims: an odd width has no even split
            raise ValueError(
                f"the Transformer needs an even d_model (rotary pairs), got d_model = {base.d_model}"
            )
        model: ModelConfig = transformer_like(base, heads_of(base.d_model, head_dim))
    else:
        options = dict(variant.options)
        if variant.multi_head:
            d_qk, d_v = base.d_qk or base.d_model, base.d_v or base.d_model
            options["n_head"] = heads_of(math.gcd(d_qk, d_v), head_dim)
        model = dataclasses.replace(base, **options)
    model.validate()
    return model
