"""What several ``gateloop`` subcommands share: argument types, the ``--threads``/``--device``
flags, the run flags (``--preset`` or ``--config``, ``--out``, ``--resume``) and the run config
they build."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateloop.cli.flags import collect_overrides

if TYPE_CHECKING:  # types only: building the parser imports no experiment
    from gateloop.experiments.run_config import RunConfig
    from gateloop.experiments.tasks import Task

# fields the data decides (the vocabularies), so they are not flags
DERIVED = frozenset({"model.vocab_size", "model.output_vocab_size"})


def _int_at_least(minimum: int, kind: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} int, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} int, got {value}")
        return value

    parse.__name__ = f"{kind.replace('-', '_')}_int"  # argparse names the type in its errors
    return parse


# argparse types: an int >= 1 (so `--threads 0` is a usage error, not a traceback), an int >= 0
positive_int = _int_at_least(1, "positive")
non_negative_int = _int_at_least(0, "non-negative")


def common_flags(device: bool) -> argparse.ArgumentParser:
    """The parent parser of every subcommand: ``--threads`` and, where a model runs, ``--device``."""
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


def run_flags(
    parser: argparse.ArgumentParser, presets: dict[str, Any], default_preset: str, out: str
) -> None:
    """``--preset`` or ``--config`` (argparse refuses both), ``--out``, ``--resume``, ``--no-progress``."""
    base = parser.add_mutually_exclusive_group()
    base.add_argument(
        "--preset", default=None, help=f"base settings: {', '.join(presets)} (default: {default_preset})"
    )
    base.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a saved run config (a run's config.json) instead of --preset",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"output directory (default: {out})")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def base_run(
    args: argparse.Namespace, run_class: type, presets: dict[str, Any], default: str
) -> tuple[str, Any]:
    """(name, run config) from ``--config FILE`` or ``--preset`` (argparse refuses both)."""
    if args.config is not None:
        from gateloop.training.run_dir import read_config_file

        saved = read_config_file(args.config)
        try:
            return args.config.stem, run_class.from_dict(saved)
        except (TypeError, ValueError) as e:
            raise ValueError(f"--config {args.config}: {e}") from None
    name = choose_preset(args.preset, presets, default)
    return name, presets[name]


def choose_preset(name: str | None, presets: dict[str, Any], default: str) -> str:
    """``--preset``'s value (``default`` when not given), checked in this one place for every
    command: an unknown name is an error that lists the task's presets."""
    from gateloop._validation import check_choice

    name = name or default
    check_choice("--preset", name, presets)
    return name


def task_run(args: argparse.Namespace, task: Task, default_preset: str) -> tuple[str, RunConfig]:
    """(preset or config name, the run config the flags describe) for ``task``: the base run,
    the model flag's choice (its default when not given; none for a run from ``--config``, or
    on a command without the flag) and every ``--section.field`` override."""
    name, base = base_run(args, task.run_class, dict(task.presets), default_preset)
    flag = task.model_flag
    choice = getattr(args, flag.name, None)
    if choice is None and args.config is None and hasattr(args, flag.name):
        choice = flag.default
    return name, flag.select(base, choice, collect_overrides(args))


def task_flags(
    parser: argparse.ArgumentParser, task: Task, default_preset: str, out: str, model_flag: bool
) -> None:
    """The flags of a run of ``task``: run flags, its model flag (when asked), every config field."""
    from gateloop.cli.flags import add_config_flags

    presets = dict(task.presets)
    run_flags(parser, presets, default_preset, out)
    flag = task.model_flag
    if model_flag:
        default = f" (default: {flag.default})" if flag.default else ""
        parser.add_argument(f"--{flag.name}", choices=flag.choices, default=None, help=flag.help + default)
    add_config_flags(parser, task.run_class, presets, skip=DERIVED, aliases=task.flag_aliases)
