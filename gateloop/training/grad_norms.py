"""``GradNormWindow``: the gradient-norm statistics of the steps between two metrics rows.

Each row of ``metrics.csv`` carries the global gradient norm (before clipping) of its own step and,
over the steps since the previous row, the largest norm and the fraction of steps the clip scaled
down; a run that clips most of its steps says so in its metrics. The window is part of the
checkpoint, so a resumed run writes the rows an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any


class GradNormWindow:
    """Running max and clip count of the global gradient norm since the last ``pop``."""

    def __init__(self, clip: float | None) -> None:
        self.clip = clip
        self.steps = 0
        self.clipped = 0
        self.max = 0.0

    def add(self, norm: float) -> None:
        self.steps += 1
        # a non-finite norm counts as the largest (the optimizer step it came with is already lost)
        self.max = max(self.max, norm) if math.isfinite(norm) else math.inf
        if self.clip is not None and not norm <= self.clip:
            self.clipped += 1

    def pop(self, norm: float) -> dict[str, float]:
        """The row's values (``norm``: this step's) and a fresh window."""
        row: dict[str, float] = {}
        if math.isfinite(norm):
            row["grad_norm"] = norm
        if self.steps:
            row["grad_norm_max"] = self.max
            if self.clip is not None:
                row["clipped_fraction"] = self.clipped / self.steps
        self.steps, self.clipped, self.max = 0, 0, 0.0
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "clipped": self.clipped, "max": self.max}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.clipped, self.max = int(state["steps"]), int(state["clipped"]), float(state["max"])
