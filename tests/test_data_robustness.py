"""Datasets refuse what they cannot use, naming the file; tokenising workers die with their parent."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gateloop.data.prepare import prepare
from gateloop.data.tokens import TokenDataset

SOTU = Path(__file__).parent / "data" / "sotu"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "bytes"
    prepare("text", out, path=SOTU, tokenizer_name="bytes", workers=1, progress=False)
    return out


def test_non_utf8_file_is_named(tmp_path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(SOTU, corpus)
    (corpus / "latin1.txt").write_bytes("Caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt is not UTF-8 text \(byte 3"):
        prepare("text", tmp_path / "out", path=corpus, tokenizer_name="bytes", workers=1, progress=False)


def test_corpus_too_small_for_val_and_test_is_refused_at_prepare(tmp_path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "one.txt").write_text("A single short document.")
    with pytest.raises(ValueError, match=r"corpus is too small: no documents for .*(val|test)"):
        prepare("text", tmp_path / "out", path=corpus, tokenizer_name="bytes", workers=1, progress=False)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_corrupt_meta_json_is_named(tmp_path, dataset) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    (copy / "meta.json").write_text('{"dtype": "uint16", "tok')
    with pytest.raises(ValueError, match=r"meta\.json is corrupt"):
        TokenDataset(copy)


def test_token_beyond_vocabulary_names_shard_and_offset(tmp_path, dataset) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    tokens = np.fromfile(copy / "val.bin", dtype=np.uint16)
    tokens[17] = 300  # the byte vocabulary has 257 ids
    tokens.tofile(copy / "val.bin")
    with pytest.raises(
        ValueError, match=r"val\.bin holds token id 300 at offset 17, beyond the vocabulary of 257"
    ):
        TokenDataset(copy)


def test_meta_vocabulary_must_match_the_tokenizer(tmp_path, dataset) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["tokenizer"]["vocab_size"] = 512
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"gives vocab_size 512, but its tokenizer 'bytes' has 257 ids"):
        TokenDataset(copy).tokenizer()
    meta["tokenizer"].update(vocab_size=257, eot_id=3)  # inside the vocabulary, but not the tokenizer's
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"gives eot_id 3, but its tokenizer 'bytes' has eot_id 256"):
        TokenDataset(copy).tokenizer()


def test_workers_die_with_a_killed_parent(tmp_path) -> None:
    """SIGKILL of the process that owns the tokenising pool: its workers exit too."""
    pids = tmp_path / "pids"
    parent = (
        "import os, time; from concurrent.futures import ProcessPoolExecutor; "
        "from gateloop.data.prepare import _init_worker\n"
        "def report(_):\n"
        f"    open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(2, initializer=_init_worker, initargs=({'name': 'bytes'}, None))\n"
        "    list(pool.map(report, range(2)))\n"
    )
    script = tmp_path / "parent.py"
    script.write_text(parent)
    proc = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    while time.time() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.2)
    workers = [int(p) for p in pids.read_text().split()]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "a tokenising worker outlived its parent"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


# ---------------------------------------------------------------- replacing a dataset, one writer


def _prepare(out: Path, corpus: Path = SOTU, **kwargs) -> dict:
    return prepare("text", out, path=corpus, tokenizer_name="bytes", workers=1, progress=False, **kwargs)


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a dataset with its bytes and mtime; the writers' ``.lock`` is no part of it."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir() if p.name != ".lock"}


def _other_corpus(root: Path) -> Path:
    """Four documents, none of them in SOTU: a dataset made from them is told apart by its sources."""
    root.mkdir()
    for i in range(4):
        (root / f"doc{i}.txt").write_text(f"Document number {i} of a corpus that is not SOTU.")
    return root


def _old_dataset(tmp_path: Path, dataset: Path) -> tuple[Path, dict[str, tuple[bytes, int]]]:
    old = tmp_path / "ds"
    shutil.copytree(dataset, old)  # copy2: mtimes kept, so the copy still matches its meta.json
    return old, _snapshot(old)


def _fail_second_write(monkeypatch, error: BaseException) -> None:
    """The next prepare raises ``error`` at its second shard write (one write per document)."""
    import gateloop.data.prepare as prep

    original, calls = prep._append, []

    def failing(*args):
        calls.append(args)
        if len(calls) == 2:
            raise error
        return original(*args)

    monkeypatch.setattr(prep, "_append", failing)
    monkeypatch.setattr(prep, "_batches", lambda docs: [[d] for d in docs])


def _fail_swap(monkeypatch) -> None:
    import gateloop.training.files as files

    def refuse(a, b):
        raise OSError(errno.EBUSY, f"cannot swap {a} and {b}")

    monkeypatch.setattr(files, "exchange_paths", refuse)


@pytest.mark.parametrize("failure", ["ctrl-c", "disk-full", "swap-fails", "bad-vocab-size"])
def test_failed_prepare_leaves_the_old_dataset_intact(tmp_path, dataset, monkeypatch, failure: str) -> None:
    old, before = _old_dataset(tmp_path, dataset)
    kwargs: dict = {}
    if failure == "ctrl-c":
        _fail_second_write(monkeypatch, KeyboardInterrupt("Ctrl-C mid-way"))
    elif failure == "disk-full":
        _fail_second_write(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    elif failure == "swap-fails":
        _fail_swap(monkeypatch)
    else:
        kwargs = {"tokenizer_name": "bpe", "vocab_size": 100}
    with pytest.raises((KeyboardInterrupt, OSError, ValueError)):
        prepare(
            "text", old, path=SOTU, **{"tokenizer_name": "bytes", "workers": 1, "progress": False, **kwargs}
        )
    assert _snapshot(old) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # the half-written new one is gone
    assert len(TokenDataset(old, verify=True)["train"]) > 0


def test_mistyped_path_keeps_the_dataset(tmp_path, dataset, capsys) -> None:
    """The issue's case: `data prepare --path TYPO` over a dataset exits 1 and changes nothing;
    into a new --out it leaves no directory behind."""
    from gateloop.cli import main

    old, before = _old_dataset(tmp_path, dataset)
    for out in (old, tmp_path / "new"):
        argv = ["data", "prepare", "--corpus", "text", "--path", str(tmp_path / "typo"), "--out", str(out)]
        assert main([*argv, "--tokenizer", "bytes", "--no-progress"]) == 1
        assert "typo is neither a file nor a directory" in capsys.readouterr().err
    assert _snapshot(old) == before and not (tmp_path / "new").exists()
    TokenDataset(old, verify=True)


def test_prepare_replaces_the_dataset_whole(tmp_path, dataset, monkeypatch) -> None:
    """A new dataset replaces the old one, also where names cannot be swapped atomically (the
    two-rename fallback), and leaves nothing beside it."""
    import gateloop.training.files as files

    old, _ = _old_dataset(tmp_path, dataset)
    other = _other_corpus(tmp_path / "other")
    for swap in (files.exchange_paths, lambda a, b: False):
        monkeypatch.setattr(files, "exchange_paths", swap)
        meta = _prepare(old, other)
        assert TokenDataset(old, verify=True).meta == meta
        assert set(meta["sources"]) == {f"doc{i}.txt" for i in range(4)}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "other"]
        # the recorded mtimes survive the swap: loading skips the hashes
        assert all(
            info["mtime_ns"] == (old / f"{s}.bin").stat().st_mtime_ns for s, info in meta["splits"].items()
        )


def test_prepare_refuses_a_directory_holding_other_files(tmp_path, dataset) -> None:
    """Replacing a dataset replaces its directory: one holding anything else is refused, untouched."""
    old, before = _old_dataset(tmp_path, dataset)
    (old / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"ds holds notes\.txt, which is not part of a dataset"):
        _prepare(old)
    assert _snapshot(old) == {**before, "notes.txt": (b"mine", (old / "notes.txt").stat().st_mtime_ns)}


def _paused_prepare(out: Path, corpus: Path, flags: Path) -> subprocess.Popen:
    """`gateloop data prepare` in another process, returned once it is mid-way (it has the lock
    and is writing shards); it goes on when the file ``flags / "go"`` appears."""
    started, go = flags / "started", flags / "go"
    code = (
        "import sys, time; from pathlib import Path; import gateloop.data.prepare as prep\n"
        "from gateloop.cli import main\n"
        "original = prep._append\n"
        "def paused(*args):\n"
        f"    Path({str(started)!r}).touch()\n"
        f"    while not Path({str(go)!r}).exists(): time.sleep(0.02)\n"
        "    return original(*args)\n"
        "prep._append = paused\n"
        f"argv = ['data', 'prepare', '--corpus', 'text', '--path', {str(corpus)!r}, '--out', {str(out)!r}]\n"
        "sys.exit(main([*argv, '--tokenizer', 'bytes', '--workers', '1', '--no-progress']))\n"
    )
    job = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not started.exists():
        assert job.poll() is None and time.time() < deadline, job.stderr.read() if job.stderr else ""
        time.sleep(0.02)
    return job


def test_a_second_prepare_is_refused_while_the_first_runs(tmp_path, dataset, capsys) -> None:
    """The issue's race: a second `data prepare` on the same --out is refused, naming the directory
    and the first writer, and touches nothing; the first one then finishes with its corpus."""
    from gateloop.cli import main

    old, before = _old_dataset(tmp_path, dataset)
    other = _other_corpus(tmp_path / "other")
    job = _paused_prepare(old, other, tmp_path)
    try:
        argv = ["data", "prepare", "--corpus", "text", "--path", str(SOTU), "--out", str(old)]
        assert main([*argv, "--tokenizer", "bytes", "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert f"{old.resolve()} is being written by pid {job.pid} on " in err
        assert "one writer per dataset directory" in err
        assert _snapshot(old) == before  # the first writes beside it until it is done
    finally:
        (tmp_path / "go").touch()
        _, first_err = job.communicate(timeout=60)
    assert job.returncode == 0, first_err
    assert set(TokenDataset(old, verify=True).meta["sources"]) == {f"doc{i}.txt" for i in range(4)}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_prepare_leaves_the_old_dataset_intact(tmp_path, dataset, sig: int) -> None:
    """A kill mid-way changes nothing in the dataset; what a SIGKILL leaves beside it (the staging
    directory) goes at the next prepare."""
    old, before = _old_dataset(tmp_path, dataset)
    other = _other_corpus(tmp_path / "other")
    job = _paused_prepare(old, other, tmp_path)
    job.send_signal(sig)
    _, err = job.communicate(timeout=60)
    assert job.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL), err
    assert _snapshot(old) == before
    TokenDataset(old, verify=True)
    _prepare(old, other)
    assert not list(tmp_path.glob(".*ds"))  # no staging or trash directory left
    assert set(TokenDataset(old).meta["sources"]) == {f"doc{i}.txt" for i in range(4)}


def test_lock_follows_a_swapped_dataset_directory(tmp_path, dataset, monkeypatch) -> None:
    """A writer that opened ``.lock`` just before another replaced the whole directory (and with it
    ``.lock``) must not hold the old, orphaned file: it locks the new one, and a third is refused."""
    import fcntl

    from gateloop.data.prepare import DatasetLock
    from gateloop.training.files import DirectoryLockedError

    old, _ = _old_dataset(tmp_path, dataset)
    real, swapped = fcntl.flock, []

    def flock_after_a_swap(fd: int, operation: int) -> None:
        if not swapped:
            swapped.append(True)
            _prepare(old)  # another writer, run between this one's open and its flock
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_swap)
    with DatasetLock(old):
        assert swapped
        with pytest.raises(DirectoryLockedError, match=rf"being written by pid {os.getpid()}"):
            DatasetLock(old).__enter__()


def test_changed_shard_is_found_by_its_hash(tmp_path, dataset) -> None:
    """A shard edited in place (same size, ids in the vocabulary): its mtime differs from the one
    recorded at prepare time, so its sha256 is checked and the shard named."""
    old, _ = _old_dataset(tmp_path, dataset)
    tokens = np.fromfile(old / "val.bin", dtype=np.uint16)
    tokens[3] = (tokens[3] + 1) % 256
    tokens.tofile(old / "val.bin")
    expected = json.loads((old / "meta.json").read_text())["splits"]["val"]["sha256"]
    with pytest.raises(
        ValueError, match=rf"shard .*val\.bin has sha256 [0-9a-f]{{64}}, meta\.json expects {expected}"
    ):
        TokenDataset(old)


def test_verify_checks_every_hash(tmp_path, dataset) -> None:
    """An edit that keeps the recorded mtime passes the cheap check and fails ``verify=True``."""
    old, _ = _old_dataset(tmp_path, dataset)
    shard = old / "test.bin"
    mtime = shard.stat().st_mtime_ns
    tokens = np.fromfile(shard, dtype=np.uint16)
    tokens[0] = (tokens[0] + 1) % 256
    tokens.tofile(shard)
    os.utime(shard, ns=(mtime, mtime))
    TokenDataset(old)
    with pytest.raises(ValueError, match=r"shard .*test\.bin has sha256"):
        TokenDataset(old, verify=True)
