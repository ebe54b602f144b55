"""The seeded ablation grid (`gateloop experiment ablations`): variants, parameter matching, the
report, and a grid interrupted in the middle of a run that resumes to the same results."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gateloop.cli import main
from gateloop.data.prepare import prepare
from gateloop.experiments import language_model as lm
from gateloop.experiments import memory_horizon as mh
from gateloop.experiments.grid import TASKS, ablation_runs, parse_variants, run_grid
from gateloop.experiments.parameter_matching import non_embedding_parameters, total_parameters
from gateloop.experiments.variants import VARIANTS, variant_model
from gateloop.layers import GateLoop
from gateloop.machine import cpu_name
from gateloop.models import GateLoopConfig, TransformerConfig, TransformerLM

TINY = [
    *("--data.seq-len", "16", "--data.num-train", "16", "--data.num-test", "8"),
    *("--train.epochs", "1", "--train.batch-size", "4", "--train.warmup-steps", "1"),
    *("--train.checkpoint-every", "2", "--train.log-every", "1", "--model.n-layer", "1", "--no-progress"),
]
GRID = ["experiment", "ablations", "--task", "memory-horizon", "--variants", "gateloop,transformer"]


def grid(out: Path, *extra: str) -> int:
    return main([*GRID, "--seeds", "0,1", "--out", str(out), *TINY, *extra])


def records(out: Path) -> dict[tuple[str, int], dict]:
    runs = json.loads((out / "results.json").read_text())["runs"]
    return {(r["variant"], r["seed"]): r for r in runs}


# ---------------------------------------------------------------------------- variants
@pytest.mark.parametrize("preset", ["retnet_like", "lru_like", "s4d_like"])
def test_transition_presets_are_the_layer_classmethods(preset: str) -> None:
    variant = {"retnet_like": "retnet-like", "lru_like": "lru-like", "s4d_like": "s4d-like"}[preset]
    base = GateLoopConfig.memory_horizon()
    for config in (base.with_transition_preset(preset), variant_model(base, variant, head_dim=16)):
        assert isinstance(config, GateLoopConfig)
        torch.manual_seed(0)
        from_config = GateLoop(config.d_model, **config.layer_kwargs())
        torch.manual_seed(0)
        from_classmethod = getattr(GateLoop, preset)(config.d_model, n_head=config.n_head)
        assert from_config.extra_repr() == from_classmethod.extra_repr()
        for name in ("magnitude_init", "phase_init_max", "d_qk", "d_v", "transition_dim"):
            assert getattr(from_config, name) == getattr(from_classmethod, name), name
        theirs = dict(from_classmethod.named_parameters())
        for name, p in from_config.named_parameters():
            assert torch.equal(p, theirs[name]) and p.requires_grad == theirs[name].requires_grad, name
        assert set(theirs) == {n for n, _ in from_config.named_parameters()}


@pytest.mark.parametrize("task", ["memory-horizon", "lm"])
def test_parameter_counts_matched_within_5_percent_and_same_budget(task: str) -> None:
    spec = TASKS[task]
    base = spec.presets["cpu"]
    runs = ablation_runs(spec, base, {}, list(VARIANTS), [0, 3])
    reference = non_embedding_parameters(base.model)
    reference_total = total_parameters(base.model)
    for (variant, seed), run in runs.items():
        assert abs(non_embedding_parameters(run.model) - reference) <= 0.05 * reference, variant
        assert abs(total_parameters(run.model) - reference_total) <= 0.05 * reference_total, variant
        assert run.train == dataclasses.replace(base.train, seed=seed)  # the same budget
        assert run.data == base.data
    assert isinstance(runs["transformer", 0].model, TransformerConfig)
    assert runs["gateloop", 0].model == base.model  # the paper's model, unchanged
    assert runs["per-head", 0].model.per_head_transition and runs["per-head", 0].model.n_head > 1
    # the LM comparison's closed form (d_model extra FFN units) is what the matcher finds
    for name in ("gateloop-fixed", "transformer"):
        matched = lm.as_model(lm.PRESETS["cpu"], name, match_parameters=True).model
        assert matched.d_channel_mixing == 576 + 192


def test_unknown_variant_is_named_with_the_valid_ones(tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match="unknown 'nope'; valid variants are gateloop, real, fixed"):
        parse_variants("gateloop,nope")
    assert main([*GRID[:4], "--variants", "real,nope", "--out", str(tmp_path / "x"), *TINY]) == 1
    err = capsys.readouterr().err
    assert "unknown 'nope'" in err and ", ".join(VARIANTS) in err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------- the grid
def test_grid_report_interrupted_resume_and_changed_config(tmp_path, monkeypatch, capsys) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert grid(whole) == 0
    table = (whole / "results.md").read_text()
    threads = torch.get_num_threads()  # what the runs record in config.json's resolved.threads
    assert "Partial" not in table and f"Machine: {cpu_name()}; {threads} CPU thread(s) per run." in table
    assert "| `gateloop` |" in table and "| `transformer` |" in table and " ± " in table and "(n=2)" in table
    summary = json.loads((whole / "results.json").read_text())
    assert summary["aggregates"]["transformer"]["metrics"]["test_accuracy"]["n"] == 2
    assert (whole / "ablations.png").stat().st_size > 0
    # a Transformer Memory Horizon run evaluates like any other
    evaluated, _ = mh.evaluate_run(whole / "transformer" / "seed0")
    assert evaluated["test_accuracy"] == records(whole)["transformer", 0]["metrics"]["test_accuracy"]

    real_batch_fn = mh.batch_fn

    def killing_batch_fn(run, x, y, runtime):  # kills the third run (gateloop, seed 1) at step 3
        next_batch = real_batch_fn(run, x, y, runtime)
        if run.train.seed != 1 or isinstance(run.model, TransformerConfig):
            return next_batch

        def draw(step: int, micro: int):
            if step == 3:
                raise KeyboardInterrupt("simulated kill")
            return next_batch(step, micro)

        return draw

    monkeypatch.setattr(mh, "batch_fn", killing_batch_fn)
    assert grid(killed) == 130
    monkeypatch.setattr(mh, "batch_fn", real_batch_fn)
    finished = [killed / "gateloop" / "seed0", killed / "transformer" / "seed0"]
    stamps = {p: (p / "final" / "model.safetensors").stat().st_mtime_ns for p in finished}
    assert (killed / "gateloop" / "seed1" / "checkpoints").is_dir()
    assert not (killed / "gateloop" / "seed1" / "final").exists()

    # the report of the finished runs was rewritten after each; --report rewrites it, trains nothing
    partial = "**Partial: 2 of 4 runs finished**; missing: seed 1: every variant."
    assert partial in (killed / "results.md").read_text()
    (killed / "results.md").unlink()
    assert grid(killed, "--report") == 0
    assert partial in (killed / "results.md").read_text() and "| `transformer` |" in capsys.readouterr().out
    assert not (killed / "transformer" / "seed1").exists()
    assert not (killed / "gateloop" / "seed1" / "final").exists()
    assert records(killed).keys() == {("gateloop", 0), ("transformer", 0)}
    missing = json.loads((killed / "results.json").read_text())["missing"]
    assert missing == [{"variant": "gateloop", "seed": 1}, {"variant": "transformer", "seed": 1}]
    assert grid(tmp_path / "empty", "--report") == 1
    assert "--report: no finished run of this grid" in capsys.readouterr().err

    # a changed config is refused, for a finished run and for an interrupted one
    assert grid(killed, "--resume", "--train.lr", "0.001") == 1
    assert "--resume with a different config" in capsys.readouterr().err
    one = ["--variants", "gateloop", "--seeds", "1", "--out", str(killed), "--resume"]
    assert main([*GRID[:4], *one, *TINY, "--train.lr", "0.001"]) == 1
    assert "train.lr: 0.0025 -> 0.001" in capsys.readouterr().err

    # a run late in the grid's order, finished by a grid of fewer variants, is in the mid-grid report
    last = ["--variants", "transformer", "--seeds", "1", "--out", str(killed), "--resume"]
    assert main([*GRID[:4], *last, *TINY]) == 0
    monkeypatch.setattr(mh, "batch_fn", killing_batch_fn)
    assert grid(killed, "--resume") == 130
    monkeypatch.setattr(mh, "batch_fn", real_batch_fn)
    partial = "**Partial: 3 of 4 runs finished**; missing: seed 1: gateloop."
    assert partial in (killed / "results.md").read_text()
    assert records(killed).keys() == {("gateloop", 0), ("transformer", 0), ("transformer", 1)}
    capsys.readouterr()

    (killed / "gateloop" / "seed0" / "ablation.json").unlink()  # killed after final/: rebuilt from it
    assert grid(killed, "--resume") == 0
    out = capsys.readouterr().out
    assert "gateloop seed 0: finished, skipped" in out and "gateloop seed 1: training" in out
    assert "transformer seed 1: finished, skipped" in out
    assert {p: (p / "final" / "model.safetensors").stat().st_mtime_ns for p in finished} == stamps
    got, want = records(killed), records(whole)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key]["metrics"] == want[key]["metrics"], key
        assert got[key]["steps"] == want[key]["steps"] == 4


def test_gateloop_variant_is_the_paper_run(tmp_path) -> None:
    """The grid's `gateloop` run is `gateloop train memory-horizon` with the same settings."""
    overrides = {"data.seq_len": 16, "data.num_train": 8, "data.num_test": 4, "train.epochs": 1}
    overrides |= {"train.batch_size": 4, "train.warmup_steps": 1}
    base = mh.PRESETS["cpu"]
    run_grid(
        "memory-horizon",
        base,
        tmp_path / "grid",
        overrides=overrides,
        variants=["gateloop"],
        seeds=[0],
        progress=False,
    )
    mh.train(mh.preset("cpu", overrides=overrides), tmp_path / "single", progress=False)
    ours = load_file(tmp_path / "grid" / "gateloop" / "seed0" / "final" / "model.safetensors")
    single = load_file(tmp_path / "single" / "final" / "model.safetensors")
    assert ours.keys() == single.keys() and all(torch.equal(ours[k], single[k]) for k in ours)


def test_lm_grid_reports_test_perplexity(tmp_path, capsys) -> None:
    data = tmp_path / "bytes"
    prepare(
        "text",
        data,
        path=Path(__file__).parent / "data" / "sotu",
        tokenizer_name="bytes",
        workers=1,
        progress=False,
    )
    flags = [
        *("--model.d-model", "32", "--model.n-layer", "1", "--model.n-head", "32"),
        *("--model.d-channel-mixing", "64", "--data.seq-len", "128", "--data.eval-tokens", "256"),
        *("--train.max-steps", "2", "--train.batch-size", "2", "--train.warmup-steps", "1", "--no-progress"),
    ]
    argv = ["experiment", "ablations", "--task", "lm", "--data", str(data), "--variants", "real,transformer"]
    assert main([*argv, "--seeds", "0", "--out", str(tmp_path / "lm"), *flags]) == 0
    table = (tmp_path / "lm" / "results.md").read_text()
    assert "test perplexity" in table and "| `real` |" in table and "(n=1)" in table
    for record in records(tmp_path / "lm").values():
        assert record["metrics"]["test_perplexity"] > 1 and record["wall_time_s"] > 0
    _, _, model = lm.load_run(tmp_path / "lm" / "transformer" / "seed0")
    assert isinstance(model, TransformerLM)


def test_grid_does_not_evaluate_the_test_set_twice(tmp_path, monkeypatch) -> None:
    """Before: the trainer's final evaluation (the test set) and then the record's, again. Now one
    evaluation a run, and the record's metrics are the trainer's final row."""
    calls = []
    evaluate = mh.evaluate
    monkeypatch.setattr(mh, "evaluate", lambda *a, **k: calls.append(1) or evaluate(*a, **k))
    out = tmp_path / "grid"
    assert main([*GRID[:4], "--variants", "gateloop", "--seeds", "0", "--out", str(out), *TINY]) == 0
    assert len(calls) == 1
    record = json.loads((out / "gateloop" / "seed0" / "ablation.json").read_text())
    final = json.loads((out / "gateloop" / "seed0" / "eval.json").read_text())
    assert record["metrics"]["test_accuracy"] == final["test_accuracy"]
