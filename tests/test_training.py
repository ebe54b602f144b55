"""Shared trainer: parameter groups, schedule, metrics, checkpoints and exact resume."""

from __future__ import annotations

import itertools
import json
import warnings

import pytest
import torch

from gateloop.experiments.memory_horizon import MemoryHorizonRun, preset
from gateloop.models import GateLoopConfig, GateLoopLM
from gateloop.training import (
    MetricsLogger,
    OldRunFormatError,
    TrainConfig,
    Trainer,
    build_scheduler,
    parameter_groups,
    read_run_config,
)
from gateloop.training.checkpoint import checkpoint_dirs
from gateloop.training.step_time import StepTimeMonitor

from training_helpers import tiny_trainer


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
    trainer = tiny_trainer(
        tmp_path / name, fail_at=fail_at, evaluate=lambda m: {"test_accuracy": 0.0, "by_span": {1: 0.5}}
    )
    result = trainer.train(resume=resume)
    return trainer.model, trainer, result


def test_resume_is_exact(tmp_path) -> None:
    straight, _, result = _tiny_run(tmp_path, "straight")
    assert result.model is straight and result.evaluation == {"test_accuracy": 0.0, "by_span": {1: 0.5}}
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(tmp_path, "killed", fail_at=10)  # checkpoints at steps 4 and 8, killed at 10
    assert [p.name for p in checkpoint_dirs(tmp_path / "killed")] == ["step_00000004", "step_00000008"]
    resumed, trainer, _ = _tiny_run(tmp_path, "killed", resume=True)
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


def test_schedule_resolution() -> None:
    """Derived step counts come from one place: steps win over epochs, warm-up steps over the
    fraction, evaluation in epochs becomes steps."""
    config = TrainConfig(epochs=70, warmup_fraction=0.53, eval_every_epochs=10)
    schedule = config.resolve(steps_per_epoch=63)
    assert (schedule.max_steps, schedule.warmup_steps, schedule.eval_every) == (4410, 2337, 630)
    assert TrainConfig(max_steps=100, epochs=70, warmup_steps=500).resolve(63).max_steps == 100
    assert TrainConfig(max_steps=100, warmup_steps=500).resolve(63).warmup_steps == 100  # capped
    assert TrainConfig(epochs=0.5).resolve(10.0).eval_every == 0  # at the end only
    with pytest.raises(ValueError, match="set max_steps or epochs"):
        TrainConfig().validate()
    with pytest.raises(TypeError, match="batch_size must be an int, got '8'"):
        TrainConfig(max_steps=1, batch_size="8").validate()  # type: ignore[arg-type]


def test_presets_are_the_paper_tables() -> None:
    paper = preset("paper").resolve()[1]
    assert (paper.max_steps, paper.warmup_steps, paper.eval_every) == (18_900, 10_000, 630)
    cpu = preset("cpu").resolve()[1]
    assert (cpu.max_steps, cpu.warmup_steps) == (4410, 2337)
    assert not preset("cpu", "fixed").model.data_controlled
    with pytest.raises(ValueError, match=r"--model\.rope-base does not apply to GateLoopConfig"):
        preset("cpu", overrides={"model.rope_base": 1.0})


def test_step_time_monitor_warns_once() -> None:
    monitor = StepTimeMonitor(factor=4.0, window=5, skip=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(11):
            monitor.record(0.05)  # the baseline: no warning
    with pytest.warns(RuntimeWarning, match=r"10\.0x the 50 ms"):
        for _ in range(5):
            monitor.record(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(20):
            monitor.record(1.0)  # once only


def test_final_evaluation_after_a_kill_is_logged_on_resume(tmp_path) -> None:
    """Killed after the last checkpoint but before the final evaluation: --resume evaluates and
    logs it; a normal run evaluates once at the last step, not twice."""
    calls = []

    def evaluate(model) -> dict:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt("killed during the final evaluation")
        return {"test_accuracy": 0.25}

    def trainer() -> Trainer:
        return tiny_trainer(tmp_path / "run", overrides={"train.eval_every_epochs": None}, evaluate=evaluate)

    with pytest.raises(KeyboardInterrupt):
        trainer().train()
    assert checkpoint_dirs(tmp_path / "run")[-1].name == "step_00000015"
    result = trainer().train(resume=True)
    rows = MetricsLogger(tmp_path / "run").read()
    assert rows[-1] == {"step": 15, "test_accuracy": 0.25} and result.evaluation == {"test_accuracy": 0.25}
    assert len(calls) == 2
    trainer().train(resume=True)  # already logged: evaluated, not logged again
    assert sum("test_accuracy" in r for r in MetricsLogger(tmp_path / "run").read()) == 1


def test_old_run_directories_are_refused_with_directions(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "memory-horizon", "memory_horizon": {}}))
    with pytest.raises(OldRunFormatError, match=r"written by an older gateloop.*start a new run"):
        read_run_config(tmp_path)


def test_cuda_rng_state_is_saved_and_restored(monkeypatch) -> None:
    """The checkpoint carries every GPU's generator state (None without CUDA) and puts it back."""
    from gateloop.training import rng_state

    if not torch.cuda.is_available():
        assert rng_state.rng_state()["cuda_rng"] is None
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    states = [torch.zeros(8, dtype=torch.uint8), torch.ones(8, dtype=torch.uint8)]
    rng_state._restore_cuda_rng(states)
    assert restored == [states]
    with pytest.raises(ValueError, match="CUDA RNG states of 1 GPUs, this machine has 2"):
        rng_state._restore_cuda_rng(states[:1])


@pytest.mark.parametrize(
    ("section", "field", "value", "error"),
    [
        ("model", "data_controlled", "false", TypeError),  # would be truthy
        ("data", "seq_len", 64.5, TypeError),
        ("model", "n_head", True, TypeError),
        ("train", "lr", "0.1", TypeError),
        ("train", "lr", -0.1, ValueError),
        ("model", "magnitude_init", (0.5, 1.5), ValueError),
        ("model", "chunk_size", -3, ValueError),
        ("train", "epochs", -1.0, ValueError),
        ("train", "max_steps", 0, ValueError),
    ],
)
def test_configs_refuse_wrong_types_and_ranges(section: str, field: str, value, error: type) -> None:
    """A hand-edited or JSON config never turns "false" into True or 64.5 into a length."""
    saved = preset("cpu").to_dict()
    saved[section][field] = list(value) if isinstance(value, tuple) else value
    with pytest.raises(error, match=field):
        MemoryHorizonRun.from_dict(saved)


def test_same_seed_same_machine_gives_identical_metrics(tmp_path) -> None:
    """Reproducibility: two runs of one config, every logged number equal (wall-clock rates aside)."""

    def rows(name: str) -> list[dict]:
        tiny_trainer(tmp_path / name).train()
        return [
            {k: v for k, v in r.items() if k != "tokens_per_s"} for r in MetricsLogger(tmp_path / name).read()
        ]

    assert rows("first") == rows("second")
