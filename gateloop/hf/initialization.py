"""The weights a Hugging Face checkpoint lacks, initialised as our constructors do.

transformers builds a model on the meta device, loads what the checkpoint holds (marking those
tensors ``_is_hf_initialized``) and calls ``_init_weights`` on each module that still holds an
unmarked one; without this, those tensors would stay uninitialised memory.
"""

from __future__ import annotations

import torch
from torch import nn

from gateloop.layers import GateLoop
from gateloop.models.base import CausalModel


@torch.no_grad()
def initialize_missing(model: CausalModel, module: nn.Module) -> None:
    """Initialise ``module``'s unmarked tensors: the embedding and an untied head N(0, 0.02) as
    our model's constructor draws them, a GateLoop layer's projections by the layer's own
    ``reset_parameters`` (its transition biases are the layer's, not a Linear's), anything else
    by its ``reset_parameters``; every loaded (marked) tensor is put back as it was."""
    missing = [p for p in module.parameters() if not getattr(p, "_is_hf_initialized", False)]
    if not missing:
        return
    if module is model.embed or module is getattr(model, "head", None):
        for p in missing:
            nn.init.normal_(p, std=0.02)  # as CausalModel._init_embeddings
        return
    owner = next(
        (m for m in model.modules() if isinstance(m, GateLoop) and any(c is module for c in m.children())),
        module,
    )
    reset = getattr(owner, "reset_parameters", None)
    if reset is None:
        return
    params = dict(owner.named_parameters())
    loaded = {n: p.detach().clone() for n, p in params.items() if getattr(p, "_is_hf_initialized", False)}
    reset()
    for name, value in loaded.items():
        params[name].copy_(value)
