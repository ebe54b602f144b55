"""What several ``gateloop`` subcommands share: argument types, the ``--threads``/``--device``
flags, the run flags (``--preset`` or ``--config``, ``--out``, ``--resume``) and the run config
they build."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gateloop.cli.flags import collect_overrides

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
        from gateloop.training.run_dir import check_run_config_format

        saved = json.loads(Path(args.config).read_text())
        check_run_config_format(saved, args.config)
        return args.config.stem, run_class.from_dict(saved)
    name = choose_preset(args.preset, presets, default)
    return name, presets[name]


def choose_preset(name: str | None, presets: dict[str, Any], default: str) -> str:
    """``--preset``'s value (``default`` when not given), checked in this one place for every
    command: an unknown name is an error that lists the task's presets."""
    from gateloop._validation import check_choice

    name = name or default
    check_choice("--preset", name, presets)
    return name


def mh_run(args: argparse.Namespace, default_preset: str) -> tuple[str, Any]:
    """The Memory Horizon run config the flags describe."""
    from gateloop.experiments.memory_horizon import PRESETS, MemoryHorizonRun, with_variant

    name, base = base_run(args, MemoryHorizonRun, PRESETS, default_preset)
    return name, with_variant(base, getattr(args, "variant", None)).with_overrides(collect_overrides(args))


def lm_run(args: argparse.Namespace) -> tuple[str, Any]:
    """The language-modelling run config the flags describe."""
    from gateloop.experiments.language_model import PRESETS, LMRun, build_run

    name, base = base_run(args, LMRun, PRESETS, "cpu")
    model = getattr(args, "model", None)
    if model is None and args.config is None and hasattr(args, "model"):
        model = "gateloop"
    return name, build_run(base, model, collect_overrides(args))


def mh_parser(parser: argparse.ArgumentParser, default_preset: str, out: str, variant: bool) -> None:
    """The flags of a Memory Horizon run: run flags, ``--variant`` (when asked), every config field."""
    from gateloop.cli.flags import add_config_flags
    from gateloop.experiments.memory_horizon import PRESETS, VARIANTS, MemoryHorizonRun

    run_flags(parser, PRESETS, default_preset, out)
    if variant:
        parser.add_argument("--variant", choices=list(VARIANTS), default=None, help="state transitions")
    add_config_flags(parser, MemoryHorizonRun, PRESETS, skip=DERIVED)


def lm_parser(parser: argparse.ArgumentParser, out: str, model: bool) -> None:
    """The flags of a language-modelling run: run flags, ``--model`` (when asked), every config field."""
    from gateloop.cli.flags import add_config_flags
    from gateloop.experiments.language_model import MODELS, PRESETS, LMRun

    run_flags(parser, PRESETS, "cpu", out)
    if model:
        parser.add_argument("--model", choices=MODELS, default=None, help="which model (default: gateloop)")
    add_config_flags(parser, LMRun, PRESETS, skip=DERIVED, aliases={"data.path": ["--data"]})
