"""AdamW with the paper's parameter groups and a cosine schedule with linear warm-up."""

from __future__ import annotations

import math

import torch
from torch import nn

from gateloop.layers.gate_loop_layer import is_transition_parameter


def parameter_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    transition_lr: float | None = None,
    transition_weight_decay: bool = False,
) -> list[dict[str, object]]:
    """Split parameters into decayed weights, undecayed ones and state-transition ones.

    No weight decay on biases, norms and embeddings (1-D tensors and ``nn.Embedding`` weights:
    decaying them shrinks scales and token identities, not capacity); transition projections
    (tagged by the GateLoop layer) get ``transition_lr`` and, unless ``transition_weight_decay``,
    no decay (paper Table 4).
    """
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, transition = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if is_transition_parameter(p):
            transition.append(p)
        elif p.ndim < 2 or id(p) in embedding_params:
            no_decay.append(p)
        else:
            decay.append(p)
    groups: list[dict[str, object]] = [
        {"params": decay, "weight_decay": weight_decay, "lr": lr, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "lr": lr, "name": "no_decay"},
    ]
    if transition:
        groups.append(
            {
                "params": transition,
                "weight_decay": weight_decay if transition_weight_decay else 0.0,
                "lr": lr if transition_lr is None else transition_lr,
                "name": "transition",
            }
        )
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.98),
    transition_lr: float | None = None,
    transition_weight_decay: bool = False,
) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay) over ``parameter_groups``."""
    groups = parameter_groups(
        model,
        lr=lr,
        weight_decay=weight_decay,
        transition_lr=transition_lr,
        transition_weight_decay=transition_weight_decay,
    )
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ~0 to each group's lr over ``warmup_steps``, then cosine decay to
    ``min_lr_ratio`` of it at ``total_steps`` (a ``torch.optim.lr_scheduler.LambdaLR``)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
