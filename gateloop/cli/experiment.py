"""``gateloop experiment memory-horizon`` / ``lm`` / ``ablations``: the paper's experiments and
the seeded ablation grid, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateloop.cli.common import DERIVED, choose_preset, task_flags, task_run
from gateloop.cli.flags import add_config_flags, collect_overrides

if TYPE_CHECKING:  # the handlers' type only: no torch import to build the parser
    from gateloop.training.distributed import Runtime


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    from gateloop.experiments.tasks import TASKS

    experiment = commands.add_parser(
        "experiment", help="reproduce an experiment of the paper end to end"
    ).add_subparsers(dest="task", required=True, metavar="TASK")
    mh = experiment.add_parser(
        "memory-horizon",
        parents=[common],
        help="train both variants, evaluate, plot Figs 5 and 7, table against the paper",
        description="Train the data-controlled and the fixed variant, evaluate both, and write "
        "results.md (with the paper's 0.43 vs 0.25), results.json and the plots.",
    )
    task_flags(mh, TASKS["memory-horizon"], "cpu", "runs/memory-horizon-PRESET", model_flag=False)
    mh.set_defaults(handler=experiment_memory_horizon)
    lm = experiment.add_parser(
        "lm",
        parents=[common],
        help="train GateLoop, fixed-transition GateLoop and the Transformer on the same tokens; compare",
        description="Same tokens, same steps, parameter counts matched (the Transformer's and the fixed "
        "variant's FFN make up for GateLoop's transition projections); test perplexity beside the "
        "paper's Table 1 and a unigram baseline; results.md, results.json and validation_loss.png.",
    )
    task_flags(lm, TASKS["lm"], "cpu", "runs/lm-PRESET", model_flag=False)
    lm.set_defaults(handler=experiment_lm)
    _ablations_parser(experiment, common)


def _ablations_parser(experiment: Any, common: argparse.ArgumentParser) -> None:
    from gateloop.experiments.grid import TASKS, ConfigFields
    from gateloop.experiments.variants import VARIANTS

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
    parser.add_argument("--task", choices=list(TASKS), required=True, help="memory-horizon or lm")
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
    parser.add_argument(
        "--preset",
        default=None,
        help="the task preset that sets the budget: "
        + "; ".join(f"{t.name}: {', '.join(t.presets)}" for t in TASKS.values())
        + " (default: cpu)",
    )
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
    parser.set_defaults(handler=experiment_ablations)


def experiment_memory_horizon(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments.memory_horizon_report import run_experiment
    from gateloop.experiments.tasks import get_task

    name, run = task_run(args, get_task("memory-horizon"), "cpu")
    out = args.out or Path("runs") / f"memory-horizon-{name}"
    run_experiment(run, out, name=name, resume=args.resume, progress=not args.no_progress, runtime=runtime)
    return 0


def experiment_lm(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments.language_model_report import run_experiment
    from gateloop.experiments.tasks import get_task

    name, run = task_run(args, get_task("lm"), "cpu")
    out = args.out or Path("runs") / f"lm-{name}"
    run_experiment(run, out, name=name, resume=args.resume, progress=not args.no_progress, runtime=runtime)
    return 0


def experiment_ablations(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments.grid import get_task, parse_seeds, parse_variants, run_grid

    task = get_task(args.task)
    name = choose_preset(args.preset, dict(task.presets), "cpu")
    out = args.out or Path("runs") / f"ablations-{task.name}-{name}"
    run_grid(
        task.name,
        task.presets[name],
        out,
        overrides=collect_overrides(args),
        variants=parse_variants(args.variants),
        seeds=parse_seeds(args.seeds),
        resume=args.resume,
        report_only=args.report,
        progress=not args.no_progress,
        runtime=runtime,
        name=name,
    )
    return 0
