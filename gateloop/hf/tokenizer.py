"""A run's tokenizer beside its converted model, as ``AutoTokenizer.from_pretrained(dir)`` reads it.

Every tokenizer a dataset can be made with becomes a ``PreTrainedTokenizerFast`` (tokenizer.json)
with ``<|endoftext|>`` as its eos/bos/pad token, ids equal to ours:

- ``bpe``: our trained byte-level BPE, the dataset's own ``tokenizer.json``;
- ``gpt2``: GPT-2's BPE built from the local ranks file tiktoken uses (no hub), by transformers'
  ``TikTokenConverter``;
- ``bytes``: UTF-8 bytes 0-255 as ids 0-255 (a byte-level pre-tokenizer and a merge-free BPE over
  the 256 byte symbols), end-of-text 256.

One difference is inherent to Hugging Face tokenizers: the text ``<|endoftext|>`` encodes as the
special token, where our tokenizers encode text as ordinary characters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateloop.data.tokenizers import EOT, GPT2_PATTERN, find_gpt2_ranks

TOKENIZER_NAMES = ("bpe", "gpt2", "bytes")


def save_hf_tokenizer(spec: dict[str, Any], dataset_dir: str | Path, out: str | Path) -> Path:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` into ``out`` for a tokenizer ``spec``
    (a ``bpe`` file is read from ``dataset_dir``); returns ``out``.

    FileNotFoundError naming the file when the dataset's BPE file is gone; ValueError when the
    result's vocabulary differs from the spec's ``vocab_size``."""
    from transformers import PreTrainedTokenizerFast

    backend = _tokenizer_object(spec, Path(dataset_dir))
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOT, bos_token=EOT, pad_token=EOT)
    if len(fast) != spec.get("vocab_size"):
        raise ValueError(
            f"the {spec['name']} tokenizer has {len(fast)} ids, but the run's data recorded "
            f"vocab_size {spec.get('vocab_size')}"
        )
    fast.save_pretrained(str(out))
    return Path(out)


def _tokenizer_object(spec: dict[str, Any], dataset_dir: Path) -> Any:
    """The ``tokenizers.Tokenizer`` equal to the spec's tokenizer."""
    from tokenizers import Tokenizer

    name = spec.get("name")
    if name == "bpe":
        path = dataset_dir / spec.get("file", "tokenizer.json")
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the run's bpe tokenizer (in its dataset) is missing")
        return Tokenizer.from_file(str(path))
    if name == "gpt2":
        from transformers.convert_slow_tokenizer import TikTokenConverter

        ranks = find_gpt2_ranks(spec.get("ranks_path"))
        converter = TikTokenConverter(
            vocab_file=str(ranks), pattern=GPT2_PATTERN, extra_special_tokens={EOT: spec["eot_id"]}
        )
        return converter.converted()
    if name == "bytes":
        return _byte_tokenizer(spec["eot_id"])
    raise ValueError(f"tokenizer name {name!r} has no Hugging Face form; expected one of {TOKENIZER_NAMES}")


def _byte_tokenizer(eot_id: int) -> Any:
    """UTF-8 bytes as ids 0-255, then ``<|endoftext|>`` (``eot_id``, 256)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    # the byte-level pre-tokenizer writes byte b as GPT-2's printable symbol bytes_to_unicode()[b];
    # a BPE without merges then maps each symbol to its byte's id
    symbols = bytes_to_unicode()
    vocab = {symbols[b]: b for b in range(256)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(EOT, special=True)])
    if tokenizer.token_to_id(EOT) != eot_id:
        raise ValueError(f"byte tokenizer: {EOT} got id {tokenizer.token_to_id(EOT)}, expected {eot_id}")
    return tokenizer
