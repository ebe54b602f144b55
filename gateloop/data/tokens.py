"""A prepared token dataset as training reads it: ``TokenDataset`` (the shards of ``gateloop data
prepare``, memory-mapped and checked against ``meta.json``) and the batches cut from it: random
windows of ``seq_len + 1`` tokens, and the document index of every position (for resets at
end-of-text inside a window)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gateloop.data.prepare import META
from gateloop.data.sources import sha256_of
from gateloop.data.tokenizers import Tokenizer, load_tokenizer


class TokenDataset:
    """A prepared dataset: memory-mapped token arrays per split, validated against ``meta.json``.

    Every shard's size is checked, and its ids against the vocabulary; its sha256 when its mtime
    is not the one recorded at prepare time, or for every shard with ``verify`` (``verify_hashes``
    is the older name of the same switch).
    """

    def __init__(self, directory: str | Path, *, verify: bool = False, verify_hashes: bool = False) -> None:
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
        _check_tokenizer_ids(meta_path, self.meta["tokenizer"])
        self.splits: dict[str, np.memmap] = {}
        for split, info in self.meta["splits"].items():
            shard = self.directory / f"{split}.bin"
            _check_shard_size(shard, info["tokens"], self.dtype)
            self.splits[split] = np.memmap(shard, dtype=self.dtype, mode="r")
            # ids before the hash: an id beyond the vocabulary is the more telling message
            _check_ids_in_vocab(shard, self.splits[split], vocab_size)
            _check_shard_hash(shard, info, verify=verify or verify_hashes)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["tokenizer"]["vocab_size"])

    @property
    def eot_id(self) -> int:
        """The end-of-text id that separates documents in the shards."""
        return int(self.meta["tokenizer"]["eot_id"])

    def tokenizer(self) -> Tokenizer:
        tokenizer = load_tokenizer(self.meta["tokenizer"], self.directory)
        found = {"vocab_size": f"{tokenizer.vocab_size} ids", "eot_id": f"eot_id {tokenizer.eot_id}"}
        for name, has in found.items():
            if getattr(tokenizer, name) != getattr(self, name):
                raise ValueError(
                    f"{self.directory / META} gives {name} {getattr(self, name)}, but its tokenizer "
                    f"{self.meta['tokenizer'].get('name')!r} has {has}: the dataset and its tokenizer "
                    "do not belong together; prepare the dataset again"
                )
        return tokenizer

    def __getitem__(self, split: str) -> np.memmap:
        if split not in self.splits:
            raise KeyError(f"split {split!r} not in {self.directory}; has {', '.join(self.splits)}")
        return self.splits[split]


def _check_shard_size(shard: Path, tokens: int, dtype: np.dtype) -> None:
    if not shard.is_file():
        raise FileNotFoundError(f"shard {shard} is missing")
    expected = tokens * dtype.itemsize
    if shard.stat().st_size != expected:
        raise ValueError(
            f"shard {shard} has {shard.stat().st_size} bytes, meta.json expects {expected} "
            f"({tokens} {dtype.name} tokens): the file is corrupt or from another run"
        )


def _check_shard_hash(shard: Path, info: dict[str, Any], *, verify: bool) -> None:
    """ValueError naming the shard when its sha256 is not meta.json's; skipped, unless ``verify``,
    for a shard whose mtime is the one recorded when it was written (unchanged since: hashing a
    large dataset at every load would cost seconds). A dataset from before mtimes were recorded
    is always hashed."""
    if not verify and info.get("mtime_ns") == shard.stat().st_mtime_ns:
        return
    found = sha256_of(shard)
    if found != info["sha256"]:
        raise ValueError(
            f"shard {shard} has sha256 {found}, meta.json expects {info['sha256']}: the file changed "
            "after `data prepare` wrote it (an edit, bit rot, or a shard of another dataset); prepare "
            "the dataset again"
        )


def _check_tokenizer_ids(meta_path: Path, spec: dict[str, object]) -> None:
    """vocab_size >= 1 and 0 <= eot_id < vocab_size, or a ValueError naming meta.json."""
    vocab_size, eot_id = spec.get("vocab_size"), spec.get("eot_id")
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise ValueError(f"{meta_path}: tokenizer vocab_size must be an integer >= 1, got {vocab_size!r}")
    if not isinstance(eot_id, int) or isinstance(eot_id, bool) or not 0 <= eot_id < vocab_size:
        raise ValueError(
            f"{meta_path}: tokenizer eot_id must be an id in [0, {vocab_size}) (the vocabulary), got "
            f"{eot_id!r}; the file is corrupt or edited: prepare the dataset again"
        )


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


def window_batch(tokens: np.ndarray, *, seq_len: int, rows: int, generator: torch.Generator) -> Tensor:
    """``rows`` random windows of ``seq_len + 1`` tokens: LongTensor [rows, seq_len + 1]."""
    if len(tokens) < seq_len + 1:
        raise ValueError(f"the split has {len(tokens)} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    starts = torch.randint(0, len(tokens) - seq_len, (rows,), generator=generator)
    return torch.stack(
        [torch.from_numpy(tokens[s : s + seq_len + 1].astype(np.int64)) for s in starts.tolist()]
    )


def document_ids(inputs: Tensor, eot_id: int) -> Tensor:
    """Document index per position: a new document starts after every end-of-text token."""
    eot = (inputs == eot_id).long()
    return torch.cumsum(eot, dim=1) - eot
