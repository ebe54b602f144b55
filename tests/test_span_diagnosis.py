"""What the Memory Horizon span diagnosis needs of the stack: clipping that can be turned off from
the command line, gradient norms in every metrics row (also unclipped, also across a resume),
h90/h50 read from an evaluation, and one comparison table of several runs."""

from __future__ import annotations

import json

import pytest
import torch

from gateloop.cli import main
from gateloop.experiments.span_horizon import memory_horizons, windowed_accuracy
from gateloop.experiments.span_report import config_change
from gateloop.training import MetricsLogger
from gateloop.training.step_metrics import GradNormWindow
from tests.test_cli import TOY
from tests.training_helpers import tiny_trainer


def _by_span(accuracies: list[float], count: int = 10) -> dict[int, dict[str, float]]:
    return {s: {"accuracy": a, "count": count} for s, a in enumerate(accuracies, start=1)}


def test_horizons_are_the_first_span_where_the_window_falls_below() -> None:
    table = _by_span([1.0] * 39 + [0.0] * 40)  # perfect to span 39, wrong from 40
    # window of 8 centred on s: spans s-3 .. s+4; at s = 36 it holds 33..40, one wrong of 8
    assert windowed_accuracy(table)[36] == pytest.approx(7 / 8)
    assert memory_horizons(table) == {"h90": 36, "h50": 40}  # 40: 37..44 holds 3 right of 8
    assert memory_horizons(_by_span([1.0] * 50)) == {"h90": None, "h50": None}  # never falls
    # pooled by count: one crowded wrong span outweighs seven sparse right ones
    crowded = {**_by_span([1.0] * 20, count=1), 10: {"accuracy": 0.0, "count": 100}}
    assert memory_horizons(crowded)["h50"] == 6  # the first window that holds span 10
    as_json = json.loads(json.dumps(table))  # keys become strings in eval.json
    assert memory_horizons(as_json) == memory_horizons(table)


def test_grad_norm_window_rows() -> None:
    window = GradNormWindow(clip=1.0)
    for norm in (0.5, 3.0, 2.0, 0.9):
        window.add(torch.tensor(norm))
    assert window.pop(torch.tensor(0.9)) == pytest.approx(
        {"grad_norm": 0.9, "grad_norm_max": 3.0, "clipped_fraction": 0.5}
    )
    window.add(torch.tensor(0.1))
    assert window.pop(torch.tensor(0.1)) == pytest.approx(
        {"grad_norm": 0.1, "grad_norm_max": 0.1, "clipped_fraction": 0.0}
    )
    unclipped = GradNormWindow(clip=None)
    unclipped.add(torch.tensor(7.0))
    unclipped.add(torch.tensor(float("nan")))  # a non-finite norm is the window's max, as inf
    assert unclipped.pop(torch.tensor(7.0)) == {"grad_norm": 7.0, "grad_norm_max": float("inf")}


def test_grad_norms_are_logged_without_a_clip(tmp_path) -> None:
    """Before: the norm was measured only when clipping, so an unclipped run logged none."""
    tiny_trainer(tmp_path / "run", overrides={"train.grad_clip": None}).train()
    rows = [r for r in MetricsLogger(tmp_path / "run").read() if "loss" in r]
    assert rows and all(r["grad_norm"] > 0 and r["grad_norm_max"] >= r["grad_norm"] for r in rows)
    assert not any("clipped_fraction" in r for r in rows)


def test_grad_norm_window_survives_a_resume(tmp_path) -> None:
    """Checkpoints every 4 steps, rows every 3: the window open at a checkpoint is restored, so the
    resumed run's rows (max, fraction clipped) equal the uninterrupted run's."""
    overrides = {"train.grad_clip": 0.05, "train.log_every": 3, "train.checkpoint_every": 4}

    def rows(name: str) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k != "tokens_per_s"} for r in MetricsLogger(tmp_path / name).read()
        ]

    tiny_trainer(tmp_path / "straight", overrides=overrides).train()
    with pytest.raises(KeyboardInterrupt):
        tiny_trainer(tmp_path / "killed", overrides=overrides, fail_at=10).train()
    tiny_trainer(tmp_path / "killed", overrides=overrides).train(resume=True)
    assert rows("killed") == rows("straight")
    fractions = [r["clipped_fraction"] for r in rows("straight") if "clipped_fraction" in r]
    assert fractions and all(0 <= f <= 1 for f in fractions) and max(fractions) > 0


def test_grad_clip_none_from_the_command_line(tmp_path) -> None:
    """Before: ``--train.grad-clip none`` parsed to None, which the flags took for 'not given'."""
    run = tmp_path / "run"
    argv = ["train", "memory-horizon", "--preset", "cpu", "--out", str(run), "--train.grad-clip", "none"]
    assert main([*argv, *TOY]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["grad_clip"] is None


def test_compare_runs_table_and_plot(tmp_path, capsys) -> None:
    base, other, out = tmp_path / "base", tmp_path / "lr", tmp_path / "report"
    train = ["train", "memory-horizon", "--preset", "cpu", *TOY]
    assert main([*train, "--out", str(base)]) == 0
    assert main([*train, "--out", str(other), "--train.lr", "0.01", "--train.grad-clip", "none"]) == 0
    capsys.readouterr()
    assert (
        main(["eval", "memory-horizon", "--run", str(base), "--run", str(other), "--compare", str(out)]) == 0
    )
    table = (out / "report_table.md").read_text()
    assert "| base | (baseline) | 6 |" in table
    assert "| lr | train.grad_clip=None, train.lr=0.01 | 6 |" in table
    runs = json.loads((out / "runs.json").read_text())
    assert runs[0]["clipped_fraction"] is not None and runs[1]["clipped_fraction"] is None
    assert {"h90", "h50", "test_accuracy", "median_grad_norm"} <= set(runs[1])
    assert (out / "accuracy_by_span.png").stat().st_size > 0
    evaluated = json.loads((other / "eval.json").read_text())
    assert set(evaluated["horizons"]) == {"h90", "h50"}
    # what results/ keeps of a run (config.json, eval.json, metrics.csv) gives the same row
    kept = tmp_path / "kept" / "base"
    kept.mkdir(parents=True)
    for name in ("config.json", "eval.json", "metrics.csv"):
        (kept / name).write_bytes((base / name).read_bytes())
    again = json.loads((out / "runs.json").read_text())[0]
    assert main(["eval", "memory-horizon", "--run", str(kept), "--compare", str(tmp_path / "again")]) == 0
    from_csv = json.loads((tmp_path / "again" / "runs.json").read_text())[0]
    for key in ("median_grad_norm", "max_grad_norm", "clipped_fraction", "h50", "test_accuracy"):
        assert from_csv[key] == pytest.approx(again[key], rel=1e-6), key


def test_config_change_names_nested_fields() -> None:
    base = {"format": 2, "train": {"lr": 1.0, "log_every": 10}, "resolved": {"threads": 1}}
    assert config_change(base, base) == "(baseline)"
    changed = {"format": 2, "train": {"lr": 2.0, "log_every": 5}, "resolved": {"threads": 2}}
    assert config_change(changed, base) == "train.lr=2.0"  # bookkeeping fields are not a change


def test_config_change_of_another_model_family_names_the_family() -> None:
    """A parameter-matched Transformer against a GateLoop baseline: the family and its size, not
    every GateLoop field it lacks."""
    base = {
        "model": {"model_type": "gateloop", "d_model": 64, "n_layer": 4, "d_qk": 64},
        "train": {"lr": 1.0},
    }
    other = {"model": {"model_type": "transformer", "d_model": 64, "n_layer": 4}, "train": {"lr": 1.0}}
    assert config_change(other, base) == "transformer (d_model 64, 4 layers)"
    assert (
        config_change({**other, "train": {"lr": 2.0}}, base)
        == "transformer (d_model 64, 4 layers), train.lr=2.0"
    )
