"""``gateloop train memory-horizon`` / ``gateloop train lm``: one model, one run directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateloop.cli.common import lm_parser, lm_run, mh_parser, mh_run

if TYPE_CHECKING:  # the handlers' type only: no torch import to build the parser
    from gateloop.training.distributed import Runtime


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    train = commands.add_parser("train", help="train one model").add_subparsers(
        dest="task", required=True, metavar="TASK"
    )
    mh = train.add_parser(
        "memory-horizon",
        parents=[common],
        help="train a GateLoop tagger on the Memory Horizon task (paper App. A)",
        description="Train one Memory Horizon variant. The paper preset is Tables 2-3 (L 1024, 300 "
        "epochs, batch 32, lr 2.5e-3, AdamW (0.9, 0.98), wd 0.05, cosine with 10 000 warm-up steps); "
        "the cpu preset is a shorter run that fits a 2-core machine; the diagnosis preset is L 256 with "
        "one reset for 5 000 steps (results/memory_horizon_diagnosis). Under `torchrun` it runs DDP.",
    )
    mh_parser(mh, "paper", "runs/memory-horizon-PRESET-VARIANT", variant=True)
    mh.set_defaults(handler=train_memory_horizon)
    lm = train.add_parser(
        "lm",
        parents=[common],
        help="train a language model on prepared token shards (one process, or torchrun for DDP)",
        description="Train GateLoop, its fixed-transition variant or the Transformer baseline on a "
        "dataset from `gateloop data prepare`. The wikitext103_125m preset is paper Table 4 (batch 16, "
        "lr 1.25e-4, transition lr 1e-4 without weight decay, wd 0.25, AdamW (0.9, 0.98), cosine with "
        "5000 warm-up steps, 100 epochs; context 1024, which the paper does not state). Under "
        "`torchrun --nproc_per_node N -m gateloop train lm ...` it runs PyTorch DDP (NCCL on GPUs, gloo "
        "on CPU); --train.batch-size is per process.",
    )
    lm_parser(lm, "runs/lm-PRESET-MODEL", model=True)
    lm.set_defaults(handler=train_lm)


def train_memory_horizon(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments import memory_horizon as mh

    name, run = mh_run(args, "paper")
    out = args.out or Path("runs") / f"memory-horizon-{name}-{run.variant}"
    result = mh.train(run, out, resume=args.resume, progress=not args.no_progress, runtime=runtime)
    if runtime is None or runtime.is_main:
        print(json.dumps({"variant": run.variant, **result.summary()}, indent=2))
        print(f"wrote {out.resolve()}")
    return 0


def train_lm(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments import language_model as lm

    name, run = lm_run(args)
    out = args.out or Path("runs") / f"lm-{name}-{run.model_name}"
    result = lm.train(run, out, resume=args.resume, progress=not args.no_progress, runtime=runtime)
    if runtime is None or runtime.is_main:
        print(json.dumps(result.summary(), indent=2))
        print(f"wrote {out.resolve()}")
    return 0
