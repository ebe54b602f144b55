"""Tokenizers for language modelling: GPT-2 BPE (the paper's), a trained byte-level BPE, raw bytes.

All share one small interface (``name``, ``vocab_size``, ``eot_id``, ``encode``, ``decode``,
``spec``) and can be rebuilt from their ``spec`` with ``load_tokenizer``, so worker processes and
a trained model find the exact tokenizer the data was made with. A spec may name a file on this
machine (GPT-2's ``ranks_path``, so that workers load the same local file and never try the hub);
a dataset's ``meta.json`` stores ``portable_spec(spec)``, without such paths.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from gateloop.data.sources import Archive, extract, sha256_of

# tiktoken's own hash of the GPT-2 (r50k_base) ranks file
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# the openai-whisper sdist ships that file as whisper/assets/gpt2.tiktoken
WHISPER_SDIST = Archive(
    "pypi", "openai-whisper", "20250625", "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96"
)
# spec entries that locate a file on this machine rather than say what the tokenizer is
LOCAL_SPEC_KEYS = ("ranks_path",)
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def spec(self) -> dict[str, Any]: ...


class ByteTokenizer:
    """UTF-8 bytes 0-255 and an end-of-text id 256."""

    name = "bytes"
    vocab_size = 257
    eot_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "vocab_size": self.vocab_size, "eot_id": self.eot_id}


def find_gpt2_ranks(path: str | Path | None = None) -> Path:
    """A verified GPT-2 ranks file: ``path``, else ``$GATELOOP_GPT2_RANKS``, else extracted from
    the openai-whisper sdist (fetched from PyPI and cached)."""
    candidate = path or os.environ.get("GATELOOP_GPT2_RANKS")
    if candidate is None:
        root = extract(WHISPER_SDIST)
        found = sorted(root.rglob("whisper/assets/gpt2.tiktoken"))
        if not found:
            raise FileNotFoundError(f"{WHISPER_SDIST.filename} has no whisper/assets/gpt2.tiktoken")
        candidate = found[0]
    candidate = Path(candidate)
    if not candidate.is_file():
        raise FileNotFoundError(f"GPT-2 ranks file {candidate} not found")
    digest = sha256_of(candidate)
    if digest != GPT2_RANKS_SHA256:
        raise ValueError(
            f"{candidate} has sha256 {digest}, expected tiktoken's {GPT2_RANKS_SHA256} (r50k_base)"
        )
    return candidate


class GPT2Tokenizer:
    """GPT-2's byte-level BPE (50 257 ids, end-of-text 50256) through tiktoken.

    Uses ``tiktoken.get_encoding("gpt2")`` when ``try_hub`` and it resolves (it downloads from a
    hub that is unreachable offline), else builds the same encoding from a local ranks file.
    """

    name = "gpt2"
    vocab_size = 50257
    eot_id = 50256

    def __init__(self, ranks_path: str | Path | None = None, *, try_hub: bool = True) -> None:
        import tiktoken

        self.ranks_path = None
        encoding = None
        if try_hub and ranks_path is None:
            try:
                encoding = tiktoken.get_encoding("gpt2")
            except Exception:
                encoding = None
        if encoding is None:
            from tiktoken.load import load_tiktoken_bpe

            path = find_gpt2_ranks(ranks_path)
            self.ranks_path = str(path)
            encoding = tiktoken.Encoding(
                name="gpt2",
                pat_str=GPT2_PATTERN,
                mergeable_ranks=load_tiktoken_bpe(str(path), expected_hash=GPT2_RANKS_SHA256),
                special_tokens={EOT: self.eot_id},
            )
        self._encoding = encoding
        if self.encode("Hello world") != [15496, 995]:
            raise RuntimeError("GPT-2 tokenizer self-check failed: 'Hello world' is not [15496, 995]")

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self._encoding.decode(ids)

    def spec(self) -> dict[str, Any]:
        """With ``ranks_path`` when built from a local ranks file: a rebuild loads that file."""
        spec = {"name": self.name, "vocab_size": self.vocab_size, "eot_id": self.eot_id}
        if self.ranks_path is not None:
            spec["ranks_path"] = self.ranks_path
        return spec


def check_bpe_vocab_size(vocab_size: int) -> None:
    """A BPE vocabulary holds the 256 byte symbols, end-of-text and at least one merge."""
    if vocab_size < 257 + 1:
        raise ValueError(f"--vocab-size must exceed the 256 byte symbols and end-of-text, got {vocab_size}")


class BPETokenizer:
    """A byte-level BPE trained with HF ``tokenizers`` (on the training split only)."""

    name = "bpe"

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.eot_id = tokenizer.token_to_id(EOT)

    @classmethod
    def train(cls, documents: list[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        check_bpe_vocab_size(vocab_size)
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(documents, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_str(text))

    def to_json(self) -> str:
        return self._tokenizer.to_str()

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids)

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vocab_size": self.vocab_size,
            "eot_id": self.eot_id,
            "file": "tokenizer.json",
        }


def portable_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` without this machine's file locations (``LOCAL_SPEC_KEYS``): what a dataset's
    ``meta.json`` records, the same wherever the data was made."""
    return {key: value for key, value in spec.items() if key not in LOCAL_SPEC_KEYS}


def load_tokenizer(spec: dict[str, Any], directory: str | Path | None = None) -> Tokenizer:
    """Rebuild a tokenizer from its ``spec`` (``directory`` holds ``tokenizer.json`` for bpe)."""
    name = spec.get("name")
    if name == "bytes":
        return ByteTokenizer()
    if name == "gpt2":
        return GPT2Tokenizer(spec.get("ranks_path"))
    if name == "bpe":
        if directory is None:
            raise ValueError("a bpe tokenizer needs the dataset directory holding tokenizer.json")
        path = Path(directory) / spec.get("file", "tokenizer.json")
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the bpe tokenizer of this dataset is missing")
        return BPETokenizer.from_json(path.read_text())
    raise ValueError(f"unknown tokenizer {name!r}; expected one of 'gpt2', 'bpe', 'bytes'")


__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "GPT2Tokenizer",
    "Tokenizer",
    "find_gpt2_ranks",
    "load_tokenizer",
    "portable_spec",
]
