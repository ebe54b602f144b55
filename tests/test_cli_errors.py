"""Every CLI error is one clear message and a non-zero exit, never a traceback (--debug shows it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from gateloop.cli import main
from gateloop.experiments import language_model as lm

MH_TOY = [
    *("--data.seq-len", "16", "--data.num-train", "16", "--data.num-test", "4"),
    *("--train.epochs", "1", "--train.batch-size", "8", "--no-progress"),
]


def _fails(capsys, argv: list[str], message: str, code: int = 1) -> None:
    if code == 2:  # usage errors: argparse exits
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    else:
        assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err, err


def test_missing_data_directory(capsys) -> None:
    _fails(
        capsys, ["train", "lm", "--data", "/no/such/dir", "--no-progress"], "/no/such/dir/meta.json not found"
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--train.batch-size", "0"], "batch_size must be a positive int, got 0"),
        (["--train.max-steps", "0"], "max_steps must be a positive int, got 0"),
        (["--train.epochs", "-1"], "epochs must be a finite number > 0"),
        (["--model.chunk-size", "-3"], "chunk_size must be a positive int, got -3"),
        (["--train.lr", "-0.1"], "lr must be a finite number > 0, got -0.1"),
        (["--train.lr", "inf"], "lr must be a finite number > 0, got inf"),
        (["--train.min-lr-ratio", "5"], "min_lr_ratio must be in [0, 1]"),
        (["--train.weight-decay", "-1"], "weight_decay must be a finite number >= 0"),
    ],
)
def test_bad_values(capsys, tmp_path, flags: list[str], message: str) -> None:
    _fails(capsys, ["train", "memory-horizon", "--out", str(tmp_path / "r"), *MH_TOY, *flags], message)


def test_bad_kinds_are_usage_errors(capsys) -> None:
    _fails(
        capsys, ["train", "memory-horizon", "--train.batch-size", "8.5"], "expected int, got '8.5'", code=2
    )
    _fails(
        capsys, ["train", "memory-horizon", "--model.data-controlled", "maybe"], "expected true/false", code=2
    )
    _fails(
        capsys, ["data", "prepare", "--out", "x", "--workers", "0"], "expected a positive int, got 0", code=2
    )
    _fails(capsys, ["eval", "lm", "--run", "x", "--stride", "0"], "expected a positive int, got 0", code=2)


def test_existing_run_and_changed_config(capsys, tmp_path) -> None:
    run = ["train", "memory-horizon", "--preset", "cpu", "--out", str(tmp_path / "r"), *MH_TOY]
    assert main(run) == 0
    _fails(capsys, run, "already holds checkpoints")
    _fails(capsys, [*run, "--resume", "--train.lr", "0.001"], "train.lr: 0.0025 -> 0.001")


def test_empty_corpus_directory(capsys, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    argv = [
        "data",
        "prepare",
        "--corpus",
        "text",
        "--path",
        str(tmp_path / "empty"),
        "--out",
        str(tmp_path / "o"),
    ]
    _fails(capsys, [*argv, "--tokenizer", "bytes", "--no-progress"], "has no *.txt files")


def test_nan_perplexity_is_an_error(capsys, tmp_path, byte_data) -> None:
    run = tmp_path / "run"
    flags = ["--model.d-model", "16", "--model.n-head", "2", "--model.n-layer", "1", "--data.seq-len", "16"]
    assert main(["train", "lm", "--data", str(byte_data), "--out", str(run), *flags,
                 "--train.max-steps", "1", "--data.eval-tokens", "64", "--no-progress"]) == 0  # fmt: skip
    _, _, model = lm.load_run(run)
    with torch.no_grad():
        model.embed.weight.fill_(float("nan"))
    model.save_pretrained(run / "final")
    _fails(capsys, ["eval", "lm", "--run", str(run), "--max-tokens", "64"], "mean NLL over 64 tokens is nan")


def test_debug_shows_the_traceback(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        main(["--debug", "eval", "memory-horizon", "--run", str(tmp_path)])
    shutil.rmtree(tmp_path, ignore_errors=True)


def _saved_mh_config(tmp_path: Path, capsys) -> dict:
    """A finished toy Memory Horizon run's config.json, as a dict."""
    import json

    assert main(["train", "memory-horizon", "--out", str(tmp_path / "base"), *MH_TOY]) == 0
    capsys.readouterr()
    return json.loads((tmp_path / "base" / "config.json").read_text())


def test_bad_config_files_are_named(capsys, tmp_path) -> None:
    """--config: torn JSON, a JSON array, bytes that are not UTF-8, a null section and a misspelt
    section each give one message naming the file (the misspelt one used to be ignored, and the
    preset's budget started)."""
    import json

    saved = _saved_mh_config(tmp_path, capsys)
    misspelt = {**{k: v for k, v in saved.items() if k != "train"}, "trian": saved["train"]}
    cases = {
        "torn.json": (b'{"task": "memory-horizon", "model": {', "is corrupt, not valid JSON"),
        "array.json": (b"[1, 2]", "holds a JSON list, not a run config"),
        "latin1.json": ('{"task": "mémoire"}'.encode("latin-1"), "is not UTF-8 text"),
        "null.json": (json.dumps({**saved, "model": None}).encode(), "section 'model' must be a JSON object"),
        "trian.json": (json.dumps(misspelt).encode(), "unknown run-config section(s) 'trian'"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        _fails(
            capsys, ["train", "memory-horizon", "--config", str(path), "--out", str(tmp_path / name)], message
        )
        assert not (tmp_path / name / "config.json").exists(), f"{name}: a run started"
    _fails(
        capsys,
        ["train", "memory-horizon", "--config", str(tmp_path / "trian.json")],
        str(tmp_path / "trian.json"),
    )


def test_dataset_whose_eot_id_is_outside_the_vocabulary(capsys, tmp_path, byte_data) -> None:
    import json

    data = tmp_path / "bytes"
    shutil.copytree(byte_data, data)
    meta = json.loads((data / "meta.json").read_text())
    meta["tokenizer"]["eot_id"] = 300  # the byte tokenizer has 257 ids
    (data / "meta.json").write_text(json.dumps(meta))
    _fails(capsys, ["train", "lm", "--data", str(data), "--no-progress"], "eot_id must be an id in [0, 257)")
