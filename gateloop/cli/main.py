"""The ``gateloop`` command line: a thin layer over the run configs, the experiments and the data.

gateloop train memory-horizon --preset cpu --variant fixed --out runs/mh-fixed
gateloop train lm --preset cpu --data data/pd-gpt2 --model.n-layer 6 --train.lr 1e-3
gateloop eval memory-horizon --run runs/mh-fixed
gateloop experiment memory-horizon --preset cpu
gateloop data prepare --out data/pd-gpt2

Every training command takes ``--preset`` or ``--config run.json`` (a saved run config), then one
``--model.*`` / ``--data.*`` / ``--train.*`` flag per config field; all of them ``--threads N`` and
``--device``; every task runs under ``torchrun`` (DDP).

One module per command (``train``, ``evaluate``, ``sample``, ``data``, ``convert``,
``experiment``), each with ``add_parsers(commands, common)``: its subcommands carry their handler
(``set_defaults(handler=...)``), so a new subcommand is one parser and one function in one module.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from gateloop import __version__
from gateloop.cli import convert, data, evaluate, experiment, sample, train
from gateloop.cli.common import common_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateloop",
        description="GateLoop (Katsch 2023): train, evaluate and reproduce the paper's experiments.",
    )
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    parser.add_argument(
        "--version", action="version", version=f"gateloop {__version__} (distribution gateloop-torch)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    on_device, cpu_only = common_flags(device=True), common_flags(device=False)
    for module in (train, evaluate, sample):
        module.add_parsers(commands, on_device)
    for module in (data, convert):  # no model runs: no --device
        module.add_parsers(commands, cpu_only)
    experiment.add_parsers(commands, on_device)
    return parser


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
    from gateloop.training.distributed import configure_cpu, setup_run

    if not hasattr(args, "device"):  # data preparation, conversion: no model run, no process group
        configure_cpu(args.threads)
        return args.handler(args, None)
    with setup_run(args.device, args.threads) as runtime:
        return args.handler(args, runtime)


if __name__ == "__main__":
    sys.exit(main())
