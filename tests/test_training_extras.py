"""Activation checkpointing and experiment trackers (TensorBoard on disk, W&B offline)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from gateloop.experiments.memory_horizon import batch_fn, load_data, loss_fn, preset
from gateloop.models import GateLoopConfig, GateLoopLM, TransformerConfig, TransformerLM
from gateloop.training import Trainer, current_runtime
from gateloop.training.activation_checkpointing import apply_activation_checkpointing

TINY = {
    "data.seq_len": 24,
    "data.num_train": 16,
    "data.num_test": 4,
    "train.epochs": 2,
    "train.batch_size": 8,
    "train.warmup_steps": 1,
    "train.log_every": 1,
    "train.eval_every_epochs": 1,
}


@pytest.mark.parametrize(
    ("model_class", "config"),
    [
        (GateLoopLM, GateLoopConfig.tiny()),
        (GateLoopLM, GateLoopConfig.tiny(n_head=32, dropout=0.1)),  # SISO heads, with dropout
        (TransformerLM, TransformerConfig.tiny(dropout=0.1)),
    ],
)
def test_activation_checkpointing_gives_the_same_gradients(model_class, config) -> None:
    torch.manual_seed(0)
    plain = model_class(config).double()
    checkpointed = model_class(config).double()
    checkpointed.load_state_dict(plain.state_dict())
    apply_activation_checkpointing(checkpointed)
    assert list(checkpointed.state_dict()) == list(plain.state_dict())  # names unchanged
    ids = torch.randint(0, config.vocab_size, (2, 37))
    grads = []
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # the same dropout masks
        model.train()
        model(ids).pow(2).mean().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def _train(run_dir, **train) -> Trainer:
    run = preset("cpu", overrides={**TINY, **{f"train.{k}": v for k, v in train.items()}})
    data = load_data(run.data)
    model_config, schedule = run.resolve()
    trainer = Trainer(
        GateLoopLM(model_config),
        run.train,
        schedule,
        run_dir,
        next_batch=batch_fn(run, data["x_train"], data["y_train"], current_runtime()),
        loss_fn=loss_fn,
        evaluate=lambda m: {"test_accuracy": 0.5, "by_span": {1: 0.5}},
        run_config=run.to_dict(),
        progress=False,
    )
    trainer.train()
    return trainer


def test_tensorboard_event_files(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _train(tmp_path / "run", log_to="tensorboard", activation_checkpointing=True)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"loss", "lr", "train_accuracy", "test_accuracy"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("test_accuracy")] == [2, 4]


def test_wandb_offline_gets_every_row(tmp_path, monkeypatch) -> None:
    logged, init = [], {}

    class FakeRun:
        def log(self, values, step):
            logged.append((step, values))

        def finish(self):
            logged.append("finished")

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: init.update(kwargs) or FakeRun()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    _train(tmp_path / "run", log_to="wandb")
    assert init["mode"] == "offline" and init["config"]["task"] == "memory-horizon"
    assert [s for s, _ in logged[:-1] if "loss" in _] == [1, 2, 3, 4] and logged[-1] == "finished"


def test_unknown_tracker_is_refused() -> None:
    with pytest.raises(ValueError, match="log_to must name trackers from tensorboard, wandb; got mlflow"):
        preset("cpu", overrides={"train.log_to": "mlflow"})
