"""The resumption component: a run directory's ``config.json`` and whether a run may start or
continue in it.

``config.json`` holds the run config once (``task``, ``model``, ``data``, ``train``: one value
per key) and, under ``resolved``, what was derived from it (step counts, world size). A resumed
run must ask for the same thing as the run it continues, except for the fields in
``RESUMABLE_CHANGES`` (bookkeeping, and the run's length).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from gateloop.file_errors import read_json_object
from gateloop.training.checkpoint import checkpoint_dirs
from gateloop.training.files import DirectoryLock, DirectoryLockedError, atomic_write_text, sweep_leftovers

CONFIG_NAME = "config.json"
# version of the run-config layout; 1 (no "format" key) is the layout before composed configs
RUN_CONFIG_FORMAT = 2

# fields a resumed run may change without changing what it computes (bookkeeping only); the run's
# length is not among them: the learning-rate schedule depends on it, so a longer run is a new run
RESUMABLE_CHANGES = {
    "train.log_every",
    "train.eval_every",
    "train.eval_every_epochs",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.log_to",
    "train.activation_checkpointing",  # recomputation gives the same gradients
    "train.checkpoint_format",  # each checkpoint says which it is; either restores the same state
    "resolved.eval_every",
}
# fields added after runs were written, with the value an older config.json means by leaving
# them out (the behaviour before they existed)
ADDED_FIELDS = {
    "train.parallel": "ddp",
    "train.cpu_offload": False,
    "train.context_parallel": 1,
    "train.checkpoint_format": "auto",
    "resolved.sharded": False,
}
# fields whose change is allowed with a warning: results move in the last digits only
WARN_CHANGES = {"resolved.threads"}


class OldRunFormatError(ValueError):
    """A run directory written before run configs were composed (format 1)."""


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/config.json`` as a dict; an old-format file is refused with what to do instead."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected a run directory written by `gateloop train`")
    return read_config_file(path)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A run config file (a run's ``config.json``, or one given as ``--config``) as a dict: a
    missing, unreadable, torn or non-UTF-8 file, or one that is not a JSON object, is a ValueError
    (FileNotFoundError) naming it; an old-format one is refused with what to do instead."""
    saved = read_json_object(path, "a run config")
    check_run_config_format(saved, path)
    return saved


def check_run_config_format(saved: dict[str, Any], path: str | Path) -> None:
    """Refuse a run config written before the composed layout (format 1: an ``experiment`` key
    and flat ``memory_horizon`` / ``lm`` sections), saying how to continue."""
    if "experiment" not in saved and saved.get("format", RUN_CONFIG_FORMAT) == RUN_CONFIG_FORMAT:
        return
    raise OldRunFormatError(
        f"{path} was written by an older gateloop (run-config format {saved.get('format', 1)}; this "
        f"version reads format {RUN_CONFIG_FORMAT}) and is not read here, so that nothing in it is "
        "misread. Its weights still load: GateLoopLM.from_pretrained / TransformerLM.from_pretrained on "
        "its final/ or checkpoints/step_*/ directory. Its settings cannot be resumed: start a new run "
        "directory with --preset and the flags of the settings it used (`gateloop train TASK --help`)."
    )


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``"a.b: old -> new"`` for every differing leaf, except ``RESUMABLE_CHANGES``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}{key}"
            if path in RESUMABLE_CHANGES | WARN_CHANGES:
                continue
            before = old.get(key, ADDED_FIELDS.get(path))
            out += config_differences(before, new.get(key, ADDED_FIELDS.get(path)), f"{path}.")
        return out
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        old, new = list(old), list(new)
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def start_run_dir(run_dir: str | Path, run_config: dict[str, Any], *, resume: bool, is_main: bool) -> bool:
    """Prepare ``run_dir`` for training; True when a checkpoint will be resumed.

    A directory with checkpoints needs ``resume`` and the same run config; a fresh start writes
    ``config.json`` and clears metrics left by a run that never checkpointed.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_main:
        swept = sweep_leftovers(run_dir) + sweep_leftovers(run_dir / "checkpoints")
        if swept:
            warnings.warn(
                f"removed what an interrupted run left behind: {', '.join(p.name for p in swept)}",
                RuntimeWarning,
                stacklevel=2,
            )
    existing = checkpoint_dirs(run_dir)
    config = {"format": RUN_CONFIG_FORMAT, **json.loads(json.dumps(run_config))}
    if existing and not resume:
        raise FileExistsError(
            f"{run_dir} already holds checkpoints (latest {existing[-1].name}); pass resume=True "
            "(--resume) to continue it, or choose another run directory"
        )
    saved_path = run_dir / CONFIG_NAME
    if existing and saved_path.is_file():
        saved = read_run_config(run_dir)
        changes = config_differences(saved, config)
        if changes:
            raise ValueError(
                f"--resume with a different config than {saved_path}: "
                + "; ".join(changes[:8])
                + " (start a new run directory, or resume with the original settings)"
            )
        _warn_on_thread_change(saved, config)
    if existing:
        return True
    if is_main:
        for name in ("metrics.jsonl", "metrics.csv"):
            (run_dir / name).unlink(missing_ok=True)
        atomic_write_text(saved_path, json.dumps(config, indent=2) + "\n")
    return False


def _warn_on_thread_change(saved: dict[str, Any], config: dict[str, Any]) -> None:
    before = saved.get("resolved", {}).get("threads")
    now = config.get("resolved", {}).get("threads")
    if before is not None and now is not None and before != now:
        warnings.warn(
            f"this run started with {before} CPU threads and resumes with {now}: matmul reductions "
            "split differently, so results differ from an uninterrupted run in the last digits (~1e-5); "
            f"pass --threads {before} for an exact continuation",
            RuntimeWarning,
            stacklevel=3,
        )


class RunLockedError(DirectoryLockedError):
    """Another live process is writing this run directory."""


class RunLock(DirectoryLock):
    """An exclusive lock on a run directory for one writer (``files.DirectoryLock``: an
    ``fcntl.flock`` on ``.lock`` that a killed holder never leaves behind)."""

    kind = "run directory"
    error = RunLockedError
