"""``gateloop train TASK``: one model, one run directory, for every task of the task table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateloop.cli.common import task_flags, task_run

if TYPE_CHECKING:  # the handlers' type only: no torch import to build the parser
    from gateloop.training.distributed import Runtime


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    from gateloop.experiments.tasks import TASKS

    train = commands.add_parser("train", help="train one model").add_subparsers(
        dest="task", required=True, metavar="TASK"
    )
    for task in TASKS.values():
        parser = train.add_parser(
            task.name, parents=[common], help=task.description.split(". ")[0], description=task.description
        )
        out = f"runs/{task.name}-PRESET-{task.model_flag.name.upper()}"
        task_flags(parser, task, task.train_preset, out, model_flag=True)
        parser.set_defaults(handler=train_task)


def train_task(args: argparse.Namespace, runtime: Runtime | None) -> int:
    """Train the run the flags describe into ``--out`` (default ``runs/TASK-PRESET-LABEL``)."""
    from gateloop.experiments.tasks import get_task

    task = get_task(args.task)
    name, run = task_run(args, task, task.train_preset)
    label = task.model_flag.label(run)
    out = args.out or Path("runs") / f"{task.name}-{name}-{label}"
    kwargs = {"resume": args.resume, "progress": not args.no_progress, "runtime": runtime}
    result = task.train(run, out, shared=task.load(run), **kwargs)
    if runtime is None or runtime.is_main:
        print(json.dumps({task.model_flag.name: label, **result.summary()}, indent=2))
        print(f"wrote {out.resolve()}")
    return 0
