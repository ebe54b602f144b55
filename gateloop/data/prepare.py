"""``gateloop data prepare``: text -> token shards (flat memmaps per split) + ``meta.json``.

Layout of a dataset directory::

    train.bin  val.bin  test.bin   uint16 (vocab <= 65536) or uint32 token ids, documents
                                   separated by the end-of-text id
    tokenizer.json                 the trained BPE (bpe tokenizer only)
    meta.json                      tokenizer, dtype, token and document counts, sha256 of the
                                   sources and of every shard; written last

A shard is written as ``NAME.bin.tmp`` and renamed when complete, and ``meta.json`` appears only
after every shard is in place, so an interrupted run never leaves a dataset that looks complete.
"""

from __future__ import annotations

import json
import os
import sys
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
    load_tokenizer,
    portable_spec,
)

CORPORA = ("public-domain", "wikitext103", "text")
TOKENIZERS = ("gpt2", "bpe", "bytes")
META = "meta.json"
FORMAT_VERSION = 1


def load_corpus(name: str, path: str | Path | None) -> Corpus:
    if name == "public-domain":
        return read_public_domain()
    if path is None:
        raise ValueError(f"--corpus {name} needs --path")
    if name == "wikitext103":
        return read_wikitext103(path)
    if name == "text":
        return read_text(path)
    raise ValueError(f"unknown corpus {name!r}; expected one of {', '.join(CORPORA)}")


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
    return PreparedSplit(tokens=total, documents=len(documents), sha256=digest)


def _append(f: Any, encoded: list[list[int]], eot_id: int, dtype: np.dtype) -> int:
    flat: list[int] = []
    for ids in encoded:
        flat.extend(ids)
        flat.append(eot_id)  # documents end with end-of-text
    np.asarray(flat, dtype=dtype).tofile(f)
    return len(flat)


def build_tokenizer(
    name: str, corpus: Corpus, *, vocab_size: int | None, gpt2_ranks: str | None
) -> Tokenizer:
    if name == "gpt2":
        return GPT2Tokenizer(gpt2_ranks)
    if name == "bytes":
        return ByteTokenizer()
    if name == "bpe":
        if vocab_size is None:
            raise ValueError("--tokenizer bpe needs --vocab-size")
        return BPETokenizer.train(corpus.splits["train"], vocab_size)  # train split only
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
    """Read a corpus, tokenise every split and write the dataset; returns ``meta.json``'s content."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)  # the dataset is incomplete until meta.json is rewritten
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
    tokenizer = build_tokenizer(tokenizer_name, corpus, vocab_size=vocab_size, gpt2_ranks=gpt2_ranks)
    if isinstance(tokenizer, BPETokenizer):
        (out / "tokenizer.json").write_text(tokenizer.to_json())
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    workers = workers or os.cpu_count() or 1
    splits = {
        split: _write_split(out / f"{split}.bin", corpus.splits[split], tokenizer, dtype, workers, progress)
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
    tmp = out / f"{META}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / META)  # atomic: a dataset looks complete only when it is
    return meta


class TokenDataset:
    """A prepared dataset: memory-mapped token arrays per split, validated against ``meta.json``."""

    def __init__(self, directory: str | Path, *, verify_hashes: bool = False) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / META
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path} not found: {self.directory} is not a complete dataset "
                "(run `gateloop data prepare`)"
            )
        try:
            self.meta = json.loads(meta_path.read_text())
            self.dtype = np.dtype(self.meta["dtype"])
            vocab_size = int(self.meta["tokenizer"]["vocab_size"])
            self.meta["splits"].items()
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{meta_path} is corrupt or not a gateloop dataset's ({type(e).__name__}: {e}); "
                "prepare the dataset again"
            ) from None
        self.splits: dict[str, np.memmap] = {}
        for split, info in self.meta["splits"].items():
            shard = self.directory / f"{split}.bin"
            if not shard.is_file():
                raise FileNotFoundError(f"shard {shard} is missing")
            expected = info["tokens"] * self.dtype.itemsize
            if shard.stat().st_size != expected:
                raise ValueError(
                    f"shard {shard} has {shard.stat().st_size} bytes, meta.json expects {expected} "
                    f"({info['tokens']} {self.dtype.name} tokens): the file is corrupt or from another run"
                )
            if verify_hashes and sha256_of(shard) != info["sha256"]:
                raise ValueError(f"shard {shard} does not match its sha256 in meta.json")
            self.splits[split] = np.memmap(shard, dtype=self.dtype, mode="r")
            _check_ids_in_vocab(shard, self.splits[split], vocab_size)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["tokenizer"]["vocab_size"])

    def tokenizer(self) -> Tokenizer:
        tokenizer = load_tokenizer(self.meta["tokenizer"], self.directory)
        if tokenizer.vocab_size != self.vocab_size:
            raise ValueError(
                f"{self.directory / META} gives vocab_size {self.vocab_size}, but its tokenizer "
                f"{self.meta['tokenizer'].get('name')!r} has {tokenizer.vocab_size} ids: the dataset and its "
                "tokenizer do not belong together; prepare the dataset again"
            )
        return tokenizer

    def __getitem__(self, split: str) -> np.memmap:
        if split not in self.splits:
            raise KeyError(f"split {split!r} not in {self.directory}; has {', '.join(self.splits)}")
        return self.splits[split]


def _check_ids_in_vocab(shard: Path, tokens: np.ndarray, vocab_size: int, block: int = 1 << 24) -> None:
    """ValueError naming the shard and the offset of the first id >= vocab_size (a shard from
    another tokenizer, or bit rot); read in blocks so a big shard is never loaded whole."""
    for start in range(0, len(tokens), block):
        part = np.asarray(tokens[start : start + block])
        if part.size and int(part.max()) >= vocab_size:
            offset = start + int(np.argmax(part >= vocab_size))
            raise ValueError(
                f"shard {shard} holds token id {int(tokens[offset])} at offset {offset}, beyond the "
                f"vocabulary of {vocab_size} in meta.json: the shard is corrupt or from another tokenizer"
            )
