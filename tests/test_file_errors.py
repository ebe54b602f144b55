"""Issue 27 item 7: torn and corrupt files given to `convert`, a full disk while checkpointing or
preparing data, `eval harness` on a Memory Horizon run and `eval lm` on a read-only run directory
each end in one message naming the file (no traceback), and lose nothing already written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gateloop.cli import main
from gateloop.data.tokens import TokenDataset
from gateloop.file_errors import DiskFullError, read_json_object, writing
from tests.filesystems import fill, read_only, small_filesystem

SOTU = Path(__file__).parent / "data" / "sotu"
LM_TOY = [
    *("--model.d-model", "16", "--model.n-head", "2", "--model.n-layer", "1", "--data.seq-len", "16"),
    *("--train.max-steps", "1", "--data.eval-tokens", "64", "--no-progress"),
]
MH_TOY = [
    *("--data.seq-len", "16", "--data.num-train", "16", "--data.num-test", "4"),
    *("--train.epochs", "1", "--train.batch-size", "8", "--no-progress"),
]


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], *messages: str) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for message in messages:
        assert message in err, err
    return err


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory, byte_data: Path) -> Path:
    run = tmp_path_factory.mktemp("runs") / "lm"
    assert main(["train", "lm", "--data", str(byte_data), "--out", str(run), *LM_TOY]) == 0
    return run


@pytest.fixture(scope="module")
def mh_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "mh"
    assert main(["train", "memory-horizon", "--out", str(run), *MH_TOY]) == 0
    return run


def _torn(path: Path, keep: int = 40) -> None:
    path.write_bytes(path.read_bytes()[:keep])


# --- reading: every JSON file through one reader ------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"d_model": ', "is corrupt, not valid JSON"),
        (b"[1, 2]", "holds a JSON list, not a model config"),
        ('{"é": 1}'.encode("latin-1"), "is not UTF-8 text"),
    ],
    ids=["torn", "array", "latin1"],
)
def test_read_json_object_names_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_json_object(path, "a model config")
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="a model config expected"):
        read_json_object(tmp_path / "missing.json", "a model config")
    with pytest.raises(ValueError, match="is a directory"):
        read_json_object(tmp_path, "a model config")


# --- convert: torn configs and corrupt weights ----------------------------------------------------


def test_to_hf_with_a_torn_run_config(capsys, tmp_path, lm_run) -> None:
    run = tmp_path / "run"
    shutil.copytree(lm_run, run)
    _torn(run / "config.json")
    _fails(capsys, ["convert", "to-hf", "--run", str(run), "--out", str(tmp_path / "hf")],
           f"{run / 'config.json'} is corrupt, not valid JSON")  # fmt: skip
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage-header"])
def test_to_hf_with_corrupt_weights(capsys, tmp_path, lm_run, damage: str) -> None:
    model = tmp_path / "final"
    shutil.copytree(lm_run / "final", model)
    weights = model / "model.safetensors"
    if damage == "truncated":
        _torn(weights, keep=100)
    else:
        raw = bytearray(weights.read_bytes())
        raw[8:20] = b"garbagegarba"
        weights.write_bytes(bytes(raw))
    _fails(capsys, ["convert", "to-hf", "--run", str(model), "--out", str(tmp_path / "hf")],
           f"{weights} is corrupt or truncated, not a safetensors file")  # fmt: skip
    assert not (tmp_path / "hf").exists()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory, lm_run: Path) -> Path:
    pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("hf") / "model"
    assert main(["convert", "to-hf", "--run", str(lm_run), "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("damage", ["torn-config", "truncated-weights", "torn-index"])
def test_from_hf_with_corrupt_files(capsys, tmp_path, hf_dir, damage: str) -> None:
    source = tmp_path / "hf"
    shutil.copytree(hf_dir, source)
    if damage == "torn-config":
        named = source / "config.json"
        _torn(named, keep=30)
        message = "is corrupt, not valid JSON"
    elif damage == "truncated-weights":
        named = source / "model.safetensors"
        _torn(named, keep=100)
        message = "is corrupt or truncated"
    else:  # a sharded save whose index is torn
        (source / "model.safetensors").rename(source / "model-00001-of-00001.safetensors")
        named = source / "model.safetensors.index.json"
        named.write_text('{"weight_map": {"model.embed.weight": ')
        message = "is corrupt, not valid JSON"
    _fails(capsys, ["convert", "from-hf", "--model", str(source), "--out", str(tmp_path / "native")],
           f"{named} {message}")  # fmt: skip
    assert not (tmp_path / "native").exists()


# --- evaluation: the wrong kind of run, a read-only run directory ----------------------------------


def test_harness_on_a_memory_horizon_run(capsys, mh_run) -> None:
    for source in (mh_run, mh_run / "final"):
        _fails(capsys, ["eval", "harness", "--run", str(source), "--tasks", "lambada_openai"],
               "is a 'memory-horizon' run, not a language-model run")  # fmt: skip


def test_harness_on_an_hf_directory_without_tokenizer(capsys, tmp_path, hf_dir) -> None:
    source = tmp_path / "hf"
    shutil.copytree(hf_dir, source)
    (source / "tokenizer.json").unlink()
    _fails(capsys, ["eval", "harness", "--run", str(source), "--tasks", "lambada_openai"],
           f"{source} has no tokenizer.json")  # fmt: skip


def test_eval_lm_on_a_read_only_run(capsys, tmp_path, lm_run) -> None:
    """Refused before any evaluation (no perplexity printed, then a failed write); --out elsewhere works."""
    run = tmp_path / "run"
    shutil.copytree(lm_run, run)
    with read_only(run):
        err = _fails(capsys, ["eval", "lm", "--run", str(run), "--max-tokens", "64"],
                     f"cannot write {run / 'eval_test.json'}", "give --out a writable path")  # fmt: skip
        assert "perplexity" not in err
        out = tmp_path / "elsewhere.json"
        assert main(["eval", "lm", "--run", str(run), "--max-tokens", "64", "--out", str(out)]) == 0
        assert "perplexity" in capsys.readouterr().out
    assert json.loads(out.read_text())["tokens"] == 64


def test_eval_memory_horizon_on_a_read_only_run(capsys, tmp_path, mh_run) -> None:
    run = tmp_path / "run"
    shutil.copytree(mh_run, run)
    with read_only(run):
        _fails(capsys, ["eval", "memory-horizon", "--run", str(run)], f"cannot write {run / 'eval.json'}")


# --- a full disk -------------------------------------------------------------------------------------


def test_writing_names_the_path_on_enospc() -> None:
    """/dev/full answers every write with ENOSPC: the error names the path, says what happened."""
    target = Path("/dev/full")
    if not target.is_char_device():
        pytest.skip("no /dev/full device")
    full = pytest.raises(DiskFullError, match="no space left on device while writing /dev/full")
    with full, writing(target), open(target, "wb") as f:
        f.write(b"x" * (1 << 16))
    with pytest.raises(ValueError, match="unrelated"), writing(target):  # other errors pass unchanged
        raise ValueError("unrelated")


@pytest.mark.parametrize("leave_kib", [300, 1000], ids=["in-the-weights", "in-the-optimizer-state"])
def test_checkpoint_on_a_full_disk(capsys, tmp_path, leave_kib: int) -> None:
    """The toy run's checkpoint (0.7 MB of safetensors weights, 1.4 MB of optimizer state) on a
    disk with less room: one message naming the checkpoint, its partial files removed, and once
    space is freed the same command with --resume finishes the run."""
    with small_filesystem(tmp_path / "disk", 4096) as disk:
        filler = fill(disk, leave_kib << 10)
        run = disk / "run"
        argv = ["train", "memory-horizon", "--out", str(run), *MH_TOY]
        _fails(capsys, argv, "no space left on device while writing", str(run / "checkpoints"), "--resume")
        assert not [p for p in run.rglob("*") if p.name.startswith(".tmp_")]  # partial files gone
        filler.unlink()
        assert main([*argv, "--resume"]) == 0
        assert (run / "final" / "model.safetensors").is_file()


def test_data_prepare_on_a_full_disk_keeps_the_dataset(capsys, tmp_path, byte_data) -> None:
    """A second `data prepare` into the same --out on a full disk: one message naming the dataset,
    and the dataset already there is untouched (it still loads, same shards)."""
    with small_filesystem(tmp_path / "disk", 2048) as disk:
        out = disk / "bytes"
        shutil.copytree(byte_data, out)
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        fill(disk, 200 << 10)  # the train shard is 0.6 MB
        argv = ["data", "prepare", "--corpus", "text", "--path", str(SOTU), "--tokenizer", "bytes"]
        _fails(capsys, [*argv, "--out", str(out), "--workers", "1", "--no-progress"],
               f"no space left on device while writing {out}")  # fmt: skip
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
        assert len(TokenDataset(out)["train"]) > 0
        assert not [p for p in disk.iterdir() if p.name.startswith(".tmp_")]
