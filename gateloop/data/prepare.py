"""``gateloop data prepare``: text -> token shards (flat memmaps per split) + ``meta.json``.

Layout of a dataset directory::

    train.bin  val.bin  test.bin   uint16 (vocab <= 65536) or uint32 token ids, documents
                                   separated by the end-of-text id
    tokenizer.json                 the trained BPE (bpe tokenizer only)
    meta.json                      tokenizer, dtype, token and document counts, sha256 of the
                                   sources, sha256 and mtime of every shard; written last
    .lock                          the writer lock (``DatasetLock``)

A new dataset is written whole into a sibling staging directory (``.tmp_NAME``) and swapped in
(``files.publish_dir``), so the directory is at every instant the complete old dataset or the
complete new one: a failed, interrupted or killed ``data prepare`` leaves the old one as it was.
Readers check every shard's size, and its sha256 when its mtime is not the one recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateloop.data.corpora import SPLITS, Corpus, read_public_domain, read_text, read_wikitext103
from gateloop.data.sources import sha256_of
from gateloop.data.tokenizers import (
    BPETokenizer,
    ByteTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    check_bpe_vocab_size,
    load_tokenizer,
    portable_spec,
)
from gateloop.file_errors import writing
from gateloop.training.files import LOCK_NAME, TMP_PREFIX, TRASH_PREFIX, DirectoryLock, publish_dir

CORPORA = ("public-domain", "wikitext103", "text")
TOKENIZERS = ("gpt2", "bpe", "bytes")
META = "meta.json"
BPE_FILE = "tokenizer.json"
FORMAT_VERSION = 1
# what a dataset directory may hold: its files, the lock, and the temporary names that versions
# writing shards in place left behind; anything else would be deleted with the old dataset
DATASET_FILES = {
    META,
    f"{META}.tmp",
    BPE_FILE,
    LOCK_NAME,
    *(f"{split}.bin" for split in SPLITS),
    *(f"{split}.bin.tmp" for split in SPLITS),
}


class DatasetLock(DirectoryLock):
    """One writer per dataset directory (``files.DirectoryLock``: ``fcntl.flock`` on ``.lock``)."""

    kind = "dataset directory"


def check_corpus_options(name: str, path: str | Path | None) -> None:
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; expected one of {', '.join(CORPORA)}")
    if name != "public-domain" and path is None:
        raise ValueError(f"--corpus {name} needs --path")


def load_corpus(name: str, path: str | Path | None) -> Corpus:
    check_corpus_options(name, path)
    if name == "public-domain":
        return read_public_domain()
    assert path is not None  # check_corpus_options: every other corpus needs a path
    return read_wikitext103(path) if name == "wikitext103" else read_text(path)


# worker-process state: the tokenizer is rebuilt once per process from its spec
_WORKER: dict[str, Any] = {}


def _init_worker(spec: dict[str, Any], bpe_json: str | None) -> None:
    _die_with_parent()
    _WORKER["tokenizer"] = BPETokenizer.from_json(bpe_json) if bpe_json else load_tokenizer(spec)


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this worker when its parent dies (Linux ``PR_SET_PDEATHSIG``), so
    a killed ``data prepare`` never leaves tokenising processes behind; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def _encode_batch(documents: list[str]) -> list[list[int]]:
    tokenizer: Tokenizer = _WORKER["tokenizer"]
    return [tokenizer.encode(doc) for doc in documents]


def _batches(documents: list[str], target_chars: int = 1 << 20) -> list[list[str]]:
    """Groups of documents of about ``target_chars`` characters (a unit of parallel work)."""
    out: list[list[str]] = [[]]
    size = 0
    for doc in documents:
        if size >= target_chars:
            out.append([])
            size = 0
        out[-1].append(doc)
        size += len(doc)
    return [b for b in out if b]


@dataclass
class PreparedSplit:
    tokens: int
    documents: int
    sha256: str
    mtime_ns: int  # the shard's when written: a reader hashes a shard whose mtime has changed


def _write_split(
    path: Path, documents: list[str], tokenizer: Tokenizer, dtype: np.dtype, workers: int, progress: bool
) -> PreparedSplit:
    from tqdm.auto import tqdm

    bpe_json = tokenizer.to_json() if isinstance(tokenizer, BPETokenizer) else None
    batches = _batches(documents)
    tmp = path.with_suffix(path.suffix + ".tmp")
    total = 0
    bar = tqdm(total=len(documents), desc=f"tokenising {path.stem}", disable=not progress, unit="doc")
    with open(tmp, "wb") as f, bar:
        if workers > 1 and len(batches) > 1:
            with ProcessPoolExecutor(
                workers, initializer=_init_worker, initargs=(tokenizer.spec(), bpe_json)
            ) as pool:
                results = pool.map(_encode_batch, batches)
                for batch, encoded in zip(batches, results, strict=True):
                    total += _append(f, encoded, tokenizer.eot_id, dtype)
                    bar.update(len(batch))
        else:
            for batch in batches:
                total += _append(f, [tokenizer.encode(d) for d in batch], tokenizer.eot_id, dtype)
                bar.update(len(batch))
    digest = sha256_of(tmp)
    os.replace(tmp, path)  # atomic: the shard appears only when complete
    # renames (here and when the dataset is swapped in) keep a file's mtime
    return PreparedSplit(
        tokens=total, documents=len(documents), sha256=digest, mtime_ns=path.stat().st_mtime_ns
    )


def _append(f: Any, encoded: list[list[int]], eot_id: int, dtype: np.dtype) -> int:
    flat: list[int] = []
    for ids in encoded:
        flat.extend(ids)
        flat.append(eot_id)  # documents end with end-of-text
    # f.write, not ndarray.tofile: a full disk is then OSError(ENOSPC), not "N requested and M written"
    f.write(np.asarray(flat, dtype=dtype).tobytes())
    return len(flat)


def tokenizer_builder(
    name: str, *, vocab_size: int | None, gpt2_ranks: str | None
) -> Callable[[Corpus], Tokenizer]:
    """Check the tokenizer options now, before a corpus is read or a file written; the function
    returned gives the tokenizer for a corpus (BPE is trained on its train split only)."""
    if name == "gpt2":
        gpt2 = GPT2Tokenizer(gpt2_ranks)  # finds and verifies the ranks file now
        return lambda corpus: gpt2
    if name == "bytes":
        return lambda corpus: ByteTokenizer()
    if name == "bpe":
        if vocab_size is None:
            raise ValueError("--tokenizer bpe needs --vocab-size")
        check_bpe_vocab_size(vocab_size)
        return lambda corpus: BPETokenizer.train(corpus.splits["train"], vocab_size)
    raise ValueError(f"unknown tokenizer {name!r}; expected one of {', '.join(TOKENIZERS)}")


def prepare(
    corpus_name: str,
    out_dir: str | Path,
    *,
    path: str | Path | None = None,
    tokenizer_name: str = "gpt2",
    vocab_size: int | None = None,
    gpt2_ranks: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Read a corpus, tokenise every split and write the dataset; returns ``meta.json``'s content.

    The options are checked before anything is touched, then ``out_dir`` is locked (a second
    writer is refused) and the corpus read; the new dataset is written beside ``out_dir`` and
    swapped in whole, so a failure at any point leaves an existing dataset as it was.
    """
    check_corpus_options(corpus_name, path)
    make_tokenizer = tokenizer_builder(tokenizer_name, vocab_size=vocab_size, gpt2_ranks=gpt2_ranks)
    # resolved: the staging directory must be a sibling of the real directory, not of a symlink
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; expected a dataset directory or a new path")
    created = not out.exists()
    with DatasetLock(out):
        try:
            _check_replaceable(out)
            corpus = _read_corpus(corpus_name, path)
            tokenizer = make_tokenizer(corpus)
            return _publish_dataset(
                out, corpus_name, corpus, tokenizer, workers or os.cpu_count() or 1, progress
            )
        except BaseException:
            if created:  # leave no empty directory where there was none
                _remove_if_only_lock(out)
            raise


def _check_replaceable(out: Path) -> None:
    """Refuse a directory holding more than a dataset: the swap would delete the rest."""
    foreign = sorted(p.name for p in out.iterdir() if p.name not in DATASET_FILES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        which = "which is" if len(foreign) == 1 else "which are"
        raise ValueError(
            f"--out {out} holds {shown}, {which} not part of a dataset; `data prepare` replaces the "
            "directory whole and would delete them: move them away or choose another --out"
        )


def _remove_if_only_lock(out: Path) -> None:
    """Remove ``out`` if it holds nothing but the lock (the lock's descriptor stays valid)."""
    if [p.name for p in out.iterdir()] == [LOCK_NAME]:
        (out / LOCK_NAME).unlink()
        out.rmdir()


def _read_corpus(corpus_name: str, path: str | Path | None) -> Corpus:
    """The corpus, refused when a split is empty; its notes are printed."""
    corpus = load_corpus(corpus_name, path)
    empty = [split for split in SPLITS if not corpus.splits[split]]
    if empty:
        counts = ", ".join(f"{s} {len(corpus.splits[s])}" for s in SPLITS)
        raise ValueError(
            f"the corpus is too small: no documents for {', '.join(empty)} (documents per split: {counts}); "
            "training needs non-empty validation and test splits: add documents (a text corpus splits them "
            "by content hash, about 98/1/1)"
        )
    for note in corpus.notes:
        print(f"[data] {note}")
    return corpus


def _publish_dataset(
    out: Path, corpus_name: str, corpus: Corpus, tokenizer: Tokenizer, workers: int, progress: bool
) -> dict[str, Any]:
    """Write the dataset into ``.tmp_NAME`` beside ``out``, then swap it in (``publish_dir``);
    on any failure the staging directory goes and ``out`` is untouched."""
    staging = out.with_name(f"{TMP_PREFIX}{out.name}")
    for leftover in (staging, out.with_name(f"{TRASH_PREFIX}{out.name}")):
        if leftover.exists():  # a killed writer's; ours to delete: we hold the lock
            shutil.rmtree(leftover)
    try:
        # the staging directory's lock is held too: swapped in, it becomes out's ``.lock``, and a
        # writer arriving then must still be refused
        with DatasetLock(staging), writing(out):
            os.chmod(staging, out.stat().st_mode & 0o7777)  # the old one's permissions: a shared one stays so
            meta = _write_dataset(staging, corpus_name, corpus, tokenizer, workers, progress)
            publish_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def _write_dataset(
    directory: Path, corpus_name: str, corpus: Corpus, tokenizer: Tokenizer, workers: int, progress: bool
) -> dict[str, Any]:
    if isinstance(tokenizer, BPETokenizer):
        (directory / BPE_FILE).write_text(tokenizer.to_json())
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    splits = {
        split: _write_split(
            directory / f"{split}.bin", corpus.splits[split], tokenizer, dtype, workers, progress
        )
        for split in SPLITS
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "corpus": corpus_name,
        "tokenizer": portable_spec(tokenizer.spec()),  # the workers got the full spec
        "dtype": dtype.name,
        "splits": {s: vars(p) for s, p in splits.items()},
        "sources": corpus.sources,
        "notes": corpus.notes,
    }
    # a plain write: the directory is private until publish_dir fsyncs and swaps it in
    (directory / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
