"""The evaluation component of the trainer: when to evaluate, and what of a result to log.

An evaluation function may return structured results (Memory Horizon: accuracy by memory span,
a dict of dicts); the metrics log keeps its scalar entries and the trainer returns all of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gateloop.training.files import atomic_write_text

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


EVAL_NAME = "eval.json"


def write_eval(
    run_dir: str | Path,
    evaluation: Mapping[str, Any],
    *,
    steps: int,
    weights: str,
    labels: Mapping[str, Any] | None = None,
) -> Path:
    """``RUN/eval.json``, the one writer of it (the trainer's final evaluation and ``gateloop eval``
    alike): ``labels`` (what the run is, e.g. its variant), the steps the weights were trained
    for, which weights (``final`` or ``checkpoints/step_*``, relative to the run) and the result."""
    path = Path(run_dir) / EVAL_NAME
    record = {**(labels or {}), "steps": steps, "weights": weights, **evaluation}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path
