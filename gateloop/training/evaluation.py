"""The evaluation component of the trainer: when to evaluate, and what of a result to log.

An evaluation function may return structured results (Memory Horizon: accuracy by memory span,
a dict of dicts); the metrics log keeps its scalar entries and the trainer returns all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

EvalFn = Callable[[nn.Module], dict[str, Any]]


def scalars(result: dict[str, Any]) -> dict[str, float]:
    """The int/float entries of an evaluation result (what goes into metrics.jsonl/.csv)."""
    return {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class Evaluator:
    """Runs ``fn(model)`` under ``no_grad`` in eval mode every ``every`` steps (0: at the end
    only) and remembers the last result, so the final evaluation is never computed twice."""

    def __init__(self, fn: EvalFn, every: int) -> None:
        self.fn = fn
        self.every = every
        self.last: tuple[int, dict[str, Any]] | None = None

    def should_evaluate(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def evaluate(self, model: nn.Module, step: int) -> dict[str, Any]:
        if self.last is not None and self.last[0] == step:
            return self.last[1]
        model.eval()
        with torch.no_grad():
            result = self.fn(model)
        self.last = (step, result)
        return result
