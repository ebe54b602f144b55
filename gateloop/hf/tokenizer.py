"""A run's tokenizer beside its converted model, as ``AutoTokenizer.from_pretrained(dir)`` reads it.

Our trained byte-level BPE (``tokenizer.json`` of the dataset) becomes a ``PreTrainedTokenizerFast``
with ``<|endoftext|>`` as its eos/bos/pad token. GPT-2 and byte runs have no file of their own:
the model's config records the tokenizer (``gateloop_tokenizer``), and for GPT-2 the user loads
GPT-2's own tokenizer (``AutoTokenizer.from_pretrained("gpt2")``, which needs the hub).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateloop.data.tokenizers import EOT


def save_hf_tokenizer(spec: dict[str, Any], dataset_dir: str | Path, out: str | Path) -> Path | None:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` into ``out`` for a ``bpe`` tokenizer
    spec (its file is read from ``dataset_dir``); returns ``out``, or None for other tokenizers.
    FileNotFoundError, naming the file, when the dataset's tokenizer file is gone."""
    if spec.get("name") != "bpe":
        return None
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    path = Path(dataset_dir) / spec.get("file", "tokenizer.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run's bpe tokenizer (in its dataset) is missing")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(path)), eos_token=EOT, bos_token=EOT, pad_token=EOT
    )
    fast.save_pretrained(str(out))
    return Path(out)
