"""The gateloop command line, end to end at toy sizes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gateloop.cli import main

TOY = [
    "--seq-len",
    "32",
    "--num-train",
    "48",
    "--num-test",
    "8",
    "--epochs",
    "2",
    "--batch-size",
    "16",
    "--warmup-steps",
    "2",
    "--eval-every-epochs",
    "1",
    "--no-progress",
]


def test_help(capsys) -> None:
    for argv in (
        ["--help"],
        ["train", "memory-horizon", "--help"],
        ["experiment", "memory-horizon", "--help"],
        ["eval", "memory-horizon", "--help"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    assert "--warmup-steps" in capsys.readouterr().out


def test_console_script_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateloop", "--help"], capture_output=True, text=True, check=True
    )
    assert "experiment" in out.stdout


def test_train_resume_and_eval(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert (
        main(["train", "memory-horizon", "--preset", "cpu", "--variant", "fixed", "--out", str(run), *TOY])
        == 0
    )
    result = json.loads((run / "eval.json").read_text())
    assert 0 <= result["test_accuracy"] <= 1 and result["variant"] == "fixed"
    assert (run / "final" / "model.safetensors").is_file() and (run / "metrics.csv").is_file()
    # resuming a finished run is a no-op that re-evaluates
    assert (
        main(
            [
                "train",
                "memory-horizon",
                "--preset",
                "cpu",
                "--variant",
                "fixed",
                "--out",
                str(run),
                "--resume",
                *TOY,
            ]
        )
        == 0
    )
    assert main(["eval", "memory-horizon", "--run", str(run)]) == 0
    again = json.loads((run / "eval.json").read_text())
    assert again["test_accuracy"] == result["test_accuracy"]
    assert "accuracy_by_span" in again


def test_experiment_writes_table_and_plots(tmp_path, capsys) -> None:
    out = tmp_path / "exp"
    assert main(["experiment", "memory-horizon", "--preset", "cpu", "--out", str(out), *TOY]) == 0
    table = (out / "results.md").read_text()
    assert "| data-controlled | 0.43 |" in table and "| fixed | 0.25 |" in table
    for name in (
        "fig5_transition_magnitudes_data-controlled.png",
        "fig7_accuracy_by_span.png",
        "training_curves.png",
        "results.json",
    ):
        assert (out / name).stat().st_size > 0, name
    assert str(out.resolve()) in capsys.readouterr().out


def test_bad_flag_value(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "memory-horizon", "--num-range", "1,2,3"])
    assert exit_info.value.code == 2
    assert "expected 2 comma-separated values" in capsys.readouterr().err
