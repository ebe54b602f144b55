"""A tiny Memory Horizon run for trainer tests: 40 sequences of 24 tokens, 15 steps, checkpoints
every 4 steps, a row per step, an evaluation per epoch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gateloop.experiments.memory_horizon import batch_fn, load_data, loss_fn, preset
from gateloop.models import GateLoopLM
from gateloop.training import Trainer, TrainResult, current_runtime

# the toy language model of the LM tests: 2 layers of width 32, 4 heads, FFN 64
TOY_LM_MODEL = (
    "--model.d-model",
    "32",
    "--model.n-layer",
    "2",
    "--model.n-head",
    "4",
    "--model.d-channel-mixing",
    "64",
)

TINY = {
    "data.seq_len": 24,
    "data.num_train": 40,
    "data.num_test": 8,
    "train.epochs": 3,
    "train.batch_size": 8,
    "train.warmup_steps": 3,
    "train.checkpoint_every": 4,
    "train.eval_every_epochs": 1,
    "train.log_every": 1,
}


def tiny_trainer(
    run_dir: Path,
    *,
    overrides: dict[str, Any] | None = None,
    evaluate: Callable[[Any], dict[str, Any]] | None = None,
    fail_at: int | None = None,
) -> Trainer:
    """A Trainer on the tiny run (same seed, so the same initial weights every time); ``fail_at``
    raises KeyboardInterrupt when that step's batch is drawn (a simulated kill)."""
    run = preset("cpu", overrides={**TINY, **(overrides or {})})
    data = load_data(run.data)
    model_config, schedule = run.resolve()
    torch.manual_seed(run.train.seed)
    model = GateLoopLM(model_config)
    batches = batch_fn(run, data["x_train"], data["y_train"], current_runtime())

    def next_batch(step: int, micro: int) -> Any:
        if fail_at is not None and step == fail_at:
            raise KeyboardInterrupt("simulated kill")
        return batches(step, micro)

    return Trainer(
        model,
        run.train,
        schedule,
        run_dir,
        next_batch=next_batch,
        loss_fn=loss_fn,
        evaluate=evaluate or (lambda m: {"test_accuracy": 0.5}),
        run_config=run.to_dict(),
        progress=False,
    )


def train_tiny(run_dir: Path, *, resume: bool = False, **kwargs: Any) -> TrainResult:
    return tiny_trainer(run_dir, **kwargs).train(resume=resume)
