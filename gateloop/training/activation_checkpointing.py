"""Activation checkpointing per block, applied from outside the model (torchtitan's way).

Each block's activations are recomputed in the backward instead of stored: memory for the
residual stream only, about one extra forward of compute. The wrapped forward replaces the
instance's ``forward`` (not the module tree), so parameter names, ``state_dict`` and checkpoints
are unchanged, and outside autograd (evaluation, generation) blocks run as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from gateloop.models.base import CausalModel


def apply_activation_checkpointing(model: CausalModel) -> CausalModel:
    """Recompute every block of ``model`` in the backward; returns the model (changed in place)."""
    for block in model.blocks:
        if getattr(block, "_gateloop_checkpointed", False):
            continue
        block.forward = _checkpointed(block.forward)  # type: ignore[method-assign]
        block._gateloop_checkpointed = True  # type: ignore[assignment]
    return model


def _checkpointed(forward: Any) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        # non-reentrant: works with keyword arguments, DDP and torch.compile; the RNG state is
        # replayed, so dropout masks in the recomputation equal the forward's
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run
