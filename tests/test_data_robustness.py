"""Datasets refuse what they cannot use, naming the file; tokenising workers die with their parent."""

from __future__ import annotations

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

from gateloop.data.prepare import TokenDataset, prepare

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
