"""Shared trainer: parameter groups, schedule, metrics, checkpoints and exact resume."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from gateloop.experiments.memory_horizon import _batch_fn, load_data, loss_fn, preset
from gateloop.models import GateLoopConfig, GateLoopLM
from gateloop.training import MetricsLogger, Trainer, build_scheduler, parameter_groups
from gateloop.training.checkpoint import checkpoint_dirs


def test_parameter_groups() -> None:
    model = GateLoopLM(GateLoopConfig.tiny(bias=True))
    groups = {g["name"]: g for g in parameter_groups(model, lr=1e-3, weight_decay=0.1, transition_lr=1e-4)}
    names = {id(p): n for n, p in model.named_parameters()}
    by_group = {k: {names[id(p)] for p in g["params"]} for k, g in groups.items()}
    assert groups["transition"]["lr"] == 1e-4 and groups["transition"]["weight_decay"] == 0.0
    assert all("alpha_proj" in n or "beta_proj" in n for n in by_group["transition"])
    assert "embed.weight" in by_group["no_decay"]
    assert all(
        n.endswith(("bias", "norm1.weight", "norm2.weight", "final_norm.weight", "embed.weight"))
        for n in by_group["no_decay"]
    )
    assert (
        "blocks.0.time_mixing.q_proj.weight" in by_group["decay"] and groups["decay"]["weight_decay"] == 0.1
    )
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))
    decayed = {
        g["name"]: g["weight_decay"]
        for g in parameter_groups(model, lr=1, weight_decay=0.1, transition_weight_decay=True)
    }
    assert decayed["transition"] == 0.1


def test_warmup_then_cosine() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-6)  # cosine midpoint
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_metrics_logger_truncate(tmp_path) -> None:
    log = MetricsLogger(tmp_path)
    for step in range(1, 6):
        log.log({"step": step, "loss": 1.0 / step})
    log.log({"step": 5, "test_accuracy": 0.5})  # a new column rewrites the CSV
    log.truncate_after(3)
    assert [r["step"] for r in log.read()] == [1, 2, 3]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == "step,loss" or header == "step,loss,test_accuracy"


def _tiny_run(tmp_path, name: str, *, fail_at: int | None = None, resume: bool = False):
    config = preset(
        "cpu",
        seq_len=24,
        num_train=40,
        num_test=8,
        epochs=3,
        batch_size=8,
        warmup_steps=3,
        checkpoint_every=4,
        eval_every_epochs=1,
    )
    data = load_data(config)
    torch.manual_seed(config.seed)
    model = GateLoopLM(config.model_config())
    batches = _batch_fn(config, data["x_train"], data["y_train"])

    def next_batch(step: int, micro: int):
        if fail_at is not None and step == fail_at:
            raise KeyboardInterrupt("simulated kill")
        return batches(step, micro)

    trainer = Trainer(
        model,
        config.train_config(progress=False),
        tmp_path / name,
        next_batch=next_batch,
        loss_fn=loss_fn,
        evaluate=lambda m: {"test_accuracy": 0.0},
    )
    trainer.fit(resume=resume)
    return model, trainer


def test_resume_is_exact(tmp_path) -> None:
    straight, _ = _tiny_run(tmp_path, "straight")
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(tmp_path, "killed", fail_at=10)  # checkpoints at steps 4 and 8, killed at 10
    assert [p.name for p in checkpoint_dirs(tmp_path / "killed")] == ["step_00000004", "step_00000008"]
    resumed, trainer = _tiny_run(tmp_path, "killed", resume=True)
    assert trainer.step == 15
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resume"

    def rows(run: str) -> list[dict]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "tokens_per_s"} for x in lines]

    assert rows("killed") == rows("straight")  # every step logged once, same losses


def test_refuses_to_overwrite_a_run(tmp_path) -> None:
    _tiny_run(tmp_path, "run")
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        _tiny_run(tmp_path, "run")
