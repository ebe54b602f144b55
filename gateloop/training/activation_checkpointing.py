"""Activation checkpointing per block, applied from outside the model (torchtitan's way).

Each block's activations are recomputed in the backward instead of stored: memory for the
residual stream only, about one extra forward of compute. The wrapped forward replaces the
instance's ``forward`` (not the module tree), so parameter names, ``state_dict`` and checkpoints
are unchanged, and outside autograd (evaluation, generation) blocks run as before.

A checkpointed block carries ``gradient_checkpointing = True``: the attribute Hugging Face's
``is_activation_checkpointing`` looks for, which ``gateloop.hf`` enables through this module.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from gateloop.models.base import CausalModel

# non-reentrant: works with keyword arguments, DDP and torch.compile; the RNG state is replayed,
# so dropout masks in the recomputation equal the forward's
DEFAULT_CHECKPOINT = functools.partial(checkpoint, use_reentrant=False)


def apply_activation_checkpointing(
    model: CausalModel, *, checkpoint_fn: Callable[..., Any] = DEFAULT_CHECKPOINT, every_n_layers: int = 1
) -> CausalModel:
    """Recompute blocks 0, n, 2n, ... (n = ``every_n_layers``) of ``model`` in the backward with
    ``checkpoint_fn(forward, *args, **kwargs)``; returns the model (changed in place). Applying it
    again replaces the previous setting."""
    if not isinstance(every_n_layers, int) or every_n_layers < 1:
        raise ValueError(f"every_n_layers must be a positive int, got {every_n_layers!r}")
    remove_activation_checkpointing(model)
    for index, block in enumerate(model.blocks):
        if index % every_n_layers == 0:
            # the class's plain forward: gateloop.hf's blocks are transformers GradientCheckpointingLayers,
            # whose class forward is a (functools.wraps) wrapper that checkpoints on its own
            forward = inspect.unwrap(type(block).forward)
            block.forward = _checkpointed(forward.__get__(block), checkpoint_fn)  # type: ignore[method-assign]
            block.gradient_checkpointing = True  # type: ignore[assignment]
    return model


def remove_activation_checkpointing(model: CausalModel) -> CausalModel:
    """Undo ``apply_activation_checkpointing``: every block stores its activations again."""
    for block in model.blocks:
        block.__dict__.pop("forward", None)  # the wrapper: the class's forward shows through again
        block.gradient_checkpointing = False  # type: ignore[assignment]
    return model


def _checkpointed(forward: Callable[..., Any], checkpoint_fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint_fn(forward, *args, **kwargs)

    return run
