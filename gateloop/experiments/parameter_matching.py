"""Parameter counts matched across model variants by the width of the FFN (one place for it).

The variants of a comparison differ in their time mixing: a GateLoop layer has q, k, v, output and
the α, β projections, attention has q, k, v and output, a fixed-transition layer one α, β per
channel. A variant with fewer parameters than the reference gets extra FFN units in every block
(each costs 2·d_model + 1 parameters). No closed form: the count is measured on a model built on
the meta device (no memory, no init), so any variant of any task (and
``language_model.as_model(match_parameters=True)``) is matched the same way.

Counts are compared without the embedding and the head (``non_embedding_parameters``, i.e.
``CausalModel.num_parameters(non_embedding=True)``): those depend on the vocabulary only, which
every variant shares, and would hide differences in the blocks on a large vocabulary.
"""

from __future__ import annotations

import dataclasses

from gateloop.models.base import CausalModel
from gateloop.models.config import ModelConfig
from gateloop.models.registry import model_class

TOLERANCE = 0.05  # matched counts are within 5 % of the reference


def non_embedding_parameters(config: ModelConfig) -> int:
    """Parameters of the blocks and the final norm (the embedding and head excluded)."""
    return _on_meta(config).num_parameters(non_embedding=True)


def total_parameters(config: ModelConfig) -> int:
    """Every parameter of the model ``config`` builds (tied embeddings counted once)."""
    return _on_meta(config).num_parameters()


def _on_meta(config: ModelConfig) -> CausalModel:
    # the meta device: shapes only, so counting a 125M-parameter model allocates nothing
    return model_class(config)(config, device="meta")


def match_parameters(config: ModelConfig, reference: ModelConfig) -> ModelConfig:
    """``config`` with its FFN width (``d_channel_mixing``) changed so that its non-embedding
    parameter count is as close as it gets to ``reference``'s; ``ValueError`` if that is still
    more than ``TOLERANCE`` away (a variant the FFN cannot compensate)."""
    target = non_embedding_parameters(reference)
    base = non_embedding_parameters(config)
    per_unit = non_embedding_parameters(_widened(config, 1)) - base  # n_layer x (2 d_model + 1)
    extra = round((target - base) / per_unit)
    extra = max(extra, 1 - config.d_channel_mixing)  # keep at least one FFN unit
    matched = _widened(config, extra)
    got = non_embedding_parameters(matched)
    if abs(got - target) > TOLERANCE * target:
        raise ValueError(
            f"cannot match parameters: {type(config).__name__} has {got:,} non-embedding parameters with "
            f"d_channel_mixing {matched.d_channel_mixing}, the reference {target:,} (more than "
            f"{TOLERANCE:.0%} apart)"
        )
    return matched


def _widened(config: ModelConfig, extra: int) -> ModelConfig:
    return dataclasses.replace(config, d_channel_mixing=config.d_channel_mixing + extra)
