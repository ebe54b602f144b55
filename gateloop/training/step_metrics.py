"""What the trainer watches at every step without waiting for the device: the gradient norms
between two metrics rows (``GradNormWindow``) and a non-finite loss (``NonFiniteLoss``).

Both keep tensors and are read on log and checkpoint steps only, so a CUDA step never stalls on
a host sync (nanoGPT's rule: read the loss when you log it).

Each row of ``metrics.csv`` carries the global gradient norm (before clipping) of its own step and,
over the steps since the previous row, the largest norm and the fraction of steps the clip scaled
down; a run that clips most of its steps says so in its metrics. The window is part of the
checkpoint, so a resumed run writes the rows an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


class GradNormWindow:
    """Running max and clip count of the global gradient norm since the last ``pop``."""

    def __init__(self, clip: float | None) -> None:
        self.clip = clip
        self.steps = 0
        self.clipped: Tensor | float = 0.0
        self.max: Tensor | float = 0.0

    def add(self, norm: Tensor) -> None:
        self.steps += 1
        norm = norm.detach().float()
        # NaN compares false: a non-finite norm becomes the max as +inf (its step is already lost)
        as_max = torch.where(torch.isfinite(norm), norm, torch.full_like(norm, math.inf))
        self.max = torch.maximum(torch.as_tensor(self.max, device=norm.device), as_max)
        if self.clip is not None:
            self.clipped = self.clipped + (~(norm <= self.clip)).float()

    def pop(self, norm: Tensor) -> dict[str, float]:
        """The row's values (``norm``: this step's) and a fresh window; reads the device once."""
        row: dict[str, float] = {}
        if math.isfinite(value := float(norm)):
            row["grad_norm"] = value
        if self.steps:
            row["grad_norm_max"] = float(self.max)
            if self.clip is not None:
                row["clipped_fraction"] = float(self.clipped) / self.steps
        self.steps, self.clipped, self.max = 0, 0.0, 0.0
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "clipped": float(self.clipped), "max": float(self.max)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.clipped, self.max = int(state["steps"]), float(state["clipped"]), float(state["max"])


class NonFiniteLoss:
    """Remembers the first step whose loss was not finite; ``check`` raises for it. The trainer
    checks before every metrics row and every checkpoint, so no checkpoint and no final model
    is ever written from weights a NaN step touched."""

    def __init__(self) -> None:
        self.first_step: Tensor | None = None  # -1 while every loss was finite
        self.value: Tensor | None = None

    def record(self, loss: Tensor, step: int) -> None:
        loss = loss.detach().float()
        if self.first_step is None:
            self.first_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self.value = torch.zeros((), device=loss.device)
        new = ~torch.isfinite(loss) & (self.first_step < 0)
        self.first_step = torch.where(new, step, self.first_step)
        self.value = torch.where(new, loss, self.value)

    def check(self) -> None:
        if self.first_step is not None and (step := int(self.first_step)) >= 0:
            raise FloatingPointError(f"loss is {float(self.value)} at step {step}; stopping")
