"""The trainer owns its run directory: it counts the run's wall time, writes the one eval.json,
waits for the device only on steps that log or save, and leaves no process-wide setting behind."""

from __future__ import annotations

import json

import pytest
import torch

from gateloop.cli import main
from gateloop.experiments.memory_horizon import loss_fn
from gateloop.training import MetricsLogger
from gateloop.training.checkpoint import checkpoint_dirs
from gateloop.training.distributed import flush_denormal_enabled
from tests.test_cli import TOY
from tests.training_helpers import tiny_trainer


def test_plain_train_counts_wall_time_and_writes_eval(tmp_path) -> None:
    """Before: only the experiment runners counted wall time; ``gateloop train`` wrote none."""
    run = tmp_path / "run"
    assert (
        main(["train", "memory-horizon", "--preset", "cpu", "--variant", "fixed", "--out", str(run), *TOY])
        == 0
    )
    assert json.loads((run / "wall_time.json").read_text())["seconds"] > 0
    trained = json.loads((run / "eval.json").read_text())
    assert main(["eval", "memory-horizon", "--run", str(run)]) == 0
    evaluated = json.loads((run / "eval.json").read_text())
    assert trained == evaluated  # one writer: the same record from training and from `eval`
    assert (trained["variant"], trained["steps"], trained["weights"]) == ("fixed", 6, "final")


def test_train_result_carries_the_total_over_sessions(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt):
        tiny_trainer(tmp_path / "run", fail_at=6).train()
    first = json.loads((tmp_path / "run" / "wall_time.json").read_text())["seconds"]
    result = tiny_trainer(tmp_path / "run").train(resume=True)
    assert result.wall_time_s is not None and result.wall_time_s > first > 0


def test_non_finite_loss_stops_before_any_checkpoint_holds_it(tmp_path) -> None:
    """The loss is read on log and checkpoint steps only; a NaN at step 5 still stops the run
    before the checkpoint of step 8 (or final/) is written from the weights it touched."""

    def poisoned(model, batch):
        loss, extras = loss_fn(model, batch)
        return (loss * float("nan") if trainer.step == 5 else loss), extras

    trainer = tiny_trainer(tmp_path / "run", overrides={"train.log_every": 100})
    trainer.loss_fn = poisoned
    with pytest.raises(FloatingPointError, match="loss is nan at step 5"):
        trainer.train()
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["step_00000004"]
    assert not (tmp_path / "run" / "final").exists()
    assert not any(r.get("step", 0) > 4 and "loss" in r for r in MetricsLogger(tmp_path / "run").read())


def test_training_leaves_flush_denormal_as_it_was(tmp_path) -> None:
    """Before: ``Trainer.__init__`` turned flush-to-zero on for the whole process."""
    before = flush_denormal_enabled()
    torch.set_flush_denormal(False)
    try:
        trainer = tiny_trainer(tmp_path / "run")
        assert not flush_denormal_enabled()
        trainer.train()
        assert not flush_denormal_enabled()
    finally:
        torch.set_flush_denormal(before)
