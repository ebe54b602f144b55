"""A watch on step times: one warning when training suddenly runs several times slower.

The usual cause on a CPU is another CPU-heavy process on the same cores: with one of two cores
busy elsewhere, a 2-thread PyTorch step was measured ~10x slower (51 -> 495 ms). The warning says
how to share the machine instead (README, "Two jobs on one machine").
"""

from __future__ import annotations

import statistics
import warnings
from collections import deque


class StepTimeMonitor:
    """Compares the median of the last ``window`` step times with the median of the first
    ``window`` (after ``skip`` warm-up steps) and warns once when it is ``factor`` times larger."""

    def __init__(self, *, factor: float = 4.0, window: int = 10, skip: int = 2) -> None:
        self.factor = factor
        self.window = window
        self.skip = skip
        self.baseline: float | None = None
        self._first: list[float] = []
        self._recent: deque[float] = deque(maxlen=window)
        self._seen = 0
        self.warned = False

    def record(self, seconds: float) -> None:
        self._seen += 1
        if self._seen <= self.skip or self.warned:
            return
        if self.baseline is None:
            self._first.append(seconds)
            if len(self._first) == self.window:
                self.baseline = statistics.median(self._first)
            return
        self._recent.append(seconds)
        if len(self._recent) < self.window:
            return
        recent = statistics.median(self._recent)
        if self.baseline > 0 and recent > self.factor * self.baseline:
            self.warned = True
            warnings.warn(
                f"training steps now take {1000 * recent:.0f} ms (median of the last {self.window}), "
                f"{recent / self.baseline:.1f}x the {1000 * self.baseline:.0f} ms of the run's start. "
                "Another CPU-heavy process on the same cores does this; to run two jobs side by side give "
                "each its own core and one thread (`taskset -c 1 gateloop ... --threads 1`, README: "
                "'Two jobs on one machine').",
                RuntimeWarning,
                stacklevel=2,
            )
