"""``gateloop eval memory-horizon`` / ``lm`` / ``harness``: evaluate trained runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateloop.cli.common import positive_int
from gateloop.file_errors import check_writable, writing

if TYPE_CHECKING:  # the handlers' type only: no torch import to build the parser
    from gateloop.training.distributed import Runtime


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
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
        help="write report_table.md, runs.json and accuracy_by_span.png of the runs into OUT (a run "
        "without weights, as results/ keeps one, is compared by the eval.json it records)",
    )
    mh_eval.set_defaults(handler=eval_memory_horizon)
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
    lm_eval.add_argument("--out", type=Path, default=None, help="result JSON (default: RUN/eval_SPLIT.json)")
    lm_eval.set_defaults(handler=eval_lm)
    _harness_parser(evaluate, common)


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
    harness.set_defaults(handler=eval_harness)


def _recorded_only(run_dir: Path) -> bool:
    """A run kept as results/ keeps it (config.json, eval.json, metrics.csv; no weights)."""
    has_weights = (run_dir / "final").is_dir() or (run_dir / "checkpoints").is_dir()
    return not has_weights and (run_dir / "eval.json").is_file()


def eval_memory_horizon(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments.memory_horizon import evaluate_run
    from gateloop.experiments.span_report import write_comparison

    for run_dir in args.run:  # every run's eval.json writable before any is evaluated
        if (run_dir / "config.json").is_file():  # else evaluate_run says what is missing
            check_writable(run_dir / "eval.json", flag="--run")
    for run_dir in args.run:
        if args.compare is not None and _recorded_only(run_dir):
            print(f"{run_dir} holds no weights: comparing the evaluation its eval.json records")
            continue
        result, model_dir = evaluate_run(run_dir, device=runtime.device if runtime else None)
        print(json.dumps({k: v for k, v in result.items() if k != "accuracy_by_span"}, indent=2))
        print(f"evaluated {model_dir}; wrote {(run_dir / 'eval.json').resolve()}")
    if args.compare is not None:
        write_comparison(args.run, args.compare)
        print(f"wrote {(args.compare / 'report_table.md').resolve()}")
    return 0


def eval_lm(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments.language_model import evaluate_perplexity, load_run

    out = args.out or (args.run / f"eval_{args.split}.json")
    check_writable(out)
    run, dataset, model = load_run(args.run, device=runtime.device if runtime else None)
    result = evaluate_perplexity(
        model, dataset[args.split], seq_len=run.data.seq_len, stride=args.stride, max_tokens=args.max_tokens
    )
    windows = (
        f" sliding by {result['stride']}" if result["stride"] != result["seq_len"] else ", non-overlapping"
    )
    protocol = (
        f"{args.split} perplexity of {args.run} = exp(mean NLL over {result['tokens']:,} tokens), "
        f"windows of {result['seq_len']} tokens{windows}"
    )
    print(f"{protocol}: {result['perplexity']:.3f}")
    with writing(out):
        out.write_text(json.dumps({**result, "protocol": protocol}, indent=2) + "\n")
    print(f"wrote {out.resolve()}")
    return 0


def eval_harness(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.hf.harness import evaluate_harness

    out = args.out or (args.run / "harness.json")
    check_writable(out)
    results = evaluate_harness(
        args.run,
        [task.strip() for task in args.tasks.split(",") if task.strip()],
        include_path=args.include_path,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=args.batch_size,
        device=str(runtime.device) if runtime else "cpu",
    )
    if runtime is not None and not runtime.is_main:
        return 0
    from lm_eval.utils import make_table

    print(make_table(results))
    with writing(out):
        out.write_text(
            json.dumps(
                {k: results[k] for k in ("results", "versions", "n-shot") if k in results},
                indent=2,
                default=str,
            )
            + "\n"
        )
    print(f"wrote {out.resolve()}")
    return 0
