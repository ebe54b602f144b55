"""Training checkpoints: model weights (safetensors + config.json) beside the trainer state.

Layout of a run directory::

    run_dir/checkpoints/step_00000500/config.json         model config
    run_dir/checkpoints/step_00000500/model.safetensors   model weights (no pickle)
    run_dir/checkpoints/step_00000500/trainer_state.pt    optimizer, scheduler, RNG, step

or, for a sharded model (FSDP), ``sharded/`` and ``rng/`` in place of ``model.safetensors`` and
the optimizer (``sharded_checkpoint``). Both load into any layout; readers of a model
directory (``trained_model_dir``) name ``gateloop convert consolidate`` for a sharded one.

A checkpoint (and ``final/``) is written to a temporary directory, fsynced and renamed into place
(``gateloop.training.files``), so a run killed while saving, or a power loss, never leaves a
half-written ``step_*`` directory behind; readers skip a corrupt one for the one before it.
"""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from gateloop.file_errors import read_json_object, writing
from gateloop.models.base import CausalModel
from gateloop.models.pretrained import CONFIG_NAME, WEIGHTS_NAME, checked_weights, save_model
from gateloop.training.distributed import Runtime, barrier
from gateloop.training.files import TMP_PREFIX, publish_dir, remove_dir
from gateloop.training.parallel import (
    full_state_dict,
    is_sharded,
    load_full_state_dict,
    load_optimizer_state,
    optimizer_state,
)
from gateloop.training.rng_state import restore_rng, rng_state
from gateloop.training.sharded_checkpoint import (
    ShardedCheckpointError,
    is_sharded_checkpoint,
    load_shards,
    save_shards,
)

TRAINER_STATE = "trainer_state.pt"


class CorruptCheckpointError(ValueError):
    """A checkpoint or model directory whose files cannot be read (torn, truncated, not ours)."""


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / TRAINER_STATE).is_file())


def check_model_dir(directory: Path) -> None:
    """``CorruptCheckpointError`` naming the file unless ``config.json`` parses and
    ``model.safetensors`` has a complete header covering the whole file."""
    from safetensors import safe_open

    config, weights = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not weights.is_file() and is_sharded_checkpoint(directory):
        raise CorruptCheckpointError(
            f"{directory} is a sharded checkpoint (no {WEIGHTS_NAME}): `gateloop convert consolidate "
            f"--checkpoint {directory} --out DIR` writes its model as one directory"
        )
    for path in (config, weights):
        if not path.is_file():
            raise CorruptCheckpointError(f"{path} is missing")
    try:
        json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptCheckpointError(f"{config} is not valid JSON ({e})") from e
    try:
        with safe_open(str(weights), "pt"):
            pass
    except Exception as e:  # safetensors raises its own SafetensorError for torn or foreign files
        raise CorruptCheckpointError(f"{weights} is corrupt or truncated ({e})") from e


def trained_model_dir(run_dir: str | Path) -> Path:
    """Where a run's weights are: ``final/`` when training finished, else the latest checkpoint.

    A directory whose files are torn (a kill while saving, a full disk) is skipped, with a warning
    that names it, for the newest intact one.
    """
    run_dir = Path(run_dir)
    candidates = [run_dir / "final", *reversed(checkpoint_dirs(run_dir))]
    problems = []
    for directory in candidates:
        if not directory.is_dir():
            continue
        try:
            check_model_dir(directory)
        except CorruptCheckpointError as e:
            problems.append(str(e))
            continue
        if problems:
            warnings.warn(f"{'; '.join(problems)}: using {directory} instead", RuntimeWarning, stacklevel=2)
        return directory
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise FileNotFoundError(f"{run_dir} has no intact final model and no intact checkpoint{detail}")


def resolve_model_dir(source: str | Path) -> tuple[Path, Path | None]:
    """(model directory, run directory or None) for a run directory (its ``final/``, else the
    latest checkpoint), a run's ``final/`` or ``checkpoints/step_*/``, or any ``save_pretrained`` dir."""
    source = Path(source)
    if (source / WEIGHTS_NAME).is_file():
        run = source.parent.parent if source.parent.name == "checkpoints" else source.parent
        is_run = (run / CONFIG_NAME).is_file() and "task" in read_config_json(run, "a run directory")
        return source, run if is_run else None
    if "task" in read_config_json(source, "a gateloop run or model directory"):
        return trained_model_dir(source), source
    raise FileNotFoundError(
        f"{source / WEIGHTS_NAME} not found: {source} is not a gateloop run or model directory"
    )


def read_config_json(directory: Path, what: str) -> dict[str, Any]:
    """``directory/config.json`` as a dict; FileNotFoundError saying ``what`` was expected."""
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory ({what} expected)")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not {what}")
    return read_json_object(path, what)


def save_checkpoint(
    run_dir: str | Path,
    *,
    step: int,
    model: CausalModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    keep: int = 2,
    extra: dict[str, Any] | None = None,
    weights: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``checkpoints/step_<step>`` (weights, config, optimizer, scheduler, every RNG and the
    ``extra`` trainer state, plain values) and prune all but the newest ``keep``. Written under a
    temporary name, fsynced and renamed (``files.publish_dir``): a checkpoint that looks complete
    is complete. ``weights`` / ``optimizer_state``: a sharded run's, gathered (default: the
    model's and the optimizer's own)."""
    tmp, final = checkpoint_paths(run_dir, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    state = trainer_state(
        step, optimizer.state_dict() if optimizer_state is None else optimizer_state, scheduler, extra
    )
    with _written_or_removed(tmp, final):
        save_model(model, tmp, weights)
        torch.save(state, tmp / TRAINER_STATE)
    publish_checkpoint(run_dir, tmp, final, keep)
    return final


def checkpoint_paths(run_dir: str | Path, step: int) -> tuple[Path, Path]:
    """(the temporary directory a checkpoint is written in, its published name)."""
    root = Path(run_dir) / "checkpoints"
    return root / f"{TMP_PREFIX}step_{step:08d}", root / f"step_{step:08d}"


def trainer_state(
    step: int,
    optimizer_state: dict[str, Any] | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """What ``trainer_state.pt`` holds: the step, the optimizer (None: it is in the shards), the
    scheduler, this process's RNG and the trainer's ``extra`` (plain values)."""
    optimizer = {} if optimizer_state is None else {"optimizer": optimizer_state}
    return {"step": step, **optimizer, "scheduler": scheduler.state_dict(), **rng_state(), **(extra or {})}


def publish_checkpoint(run_dir: str | Path, tmp: Path, final: Path, keep: int) -> None:
    """Publish the written ``tmp`` as ``final`` (fsynced, one rename) and prune all but the newest
    ``keep`` checkpoints."""
    with _written_or_removed(tmp, final):
        publish_dir(tmp, final)
    for old in checkpoint_dirs(run_dir)[:-keep] if keep > 0 else []:
        remove_dir(old)


def trained_steps(run_dir: str | Path, model_dir: str | Path) -> int:
    """The optimizer steps behind ``model_dir``: a checkpoint's recorded step, or for ``final/``
    the run's ``max_steps`` (``config.json``)."""
    from gateloop.training.run_dir import read_run_config  # run_dir imports this module

    model_dir = Path(model_dir)
    if model_dir.name == "final":
        return int(read_run_config(run_dir)["resolved"]["max_steps"])
    return int(model_dir.name.removeprefix("step_"))


def save_final(
    run_dir: str | Path, model: CausalModel, weights: dict[str, torch.Tensor] | None = None
) -> Path:
    """``run_dir/final`` (``save_pretrained`` layout), published like a checkpoint; ``weights``:
    a sharded model's, gathered."""
    run_dir = Path(run_dir)
    tmp = run_dir / f"{TMP_PREFIX}final"
    if tmp.exists():
        shutil.rmtree(tmp)
    with _written_or_removed(tmp, run_dir / "final"):
        save_model(model, tmp, weights)
        publish_dir(tmp, run_dir / "final")
    return run_dir / "final"


@contextmanager
def _written_or_removed(tmp: Path, final: Path) -> Iterator[None]:
    """Write ``final`` through ``tmp``: a full disk is one error naming ``final``, and a failed
    write takes its partial files away with it (they would keep the disk full)."""
    try:
        with writing(final):
            yield
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(
    directory: str | Path,
    *,
    model: CausalModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank: int = 0,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG in place; returns the trainer state dict.

    A sharded checkpoint (``sharded_checkpoint``) is read by every rank (a collective), ``rank``
    restoring its own RNG; a full one by each rank alone.

    Unreadable files raise ``CorruptCheckpointError`` naming them; a checkpoint of another model
    config raises ``ValueError`` naming the fields.
    """
    directory = Path(directory)
    sharded = is_sharded_checkpoint(directory)
    if not sharded:
        check_model_dir(directory)
        load_full_state_dict(model, checked_weights(model, directory))  # refuses another model config
    path = directory / TRAINER_STATE
    try:
        # weights_only: the trainer state holds tensors and plain Python values only
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile) as e:
        raise CorruptCheckpointError(f"{path} is corrupt or truncated ({type(e).__name__})") from e
    restore_rng(state)  # rank 0's; a sharded checkpoint then restores each rank's own
    if sharded:
        try:
            load_shards(directory, model, optimizer, rank)
        except ShardedCheckpointError as e:
            raise CorruptCheckpointError(str(e)) from e
    else:
        load_optimizer_state(model, optimizer, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state


class Checkpointer:
    """The checkpointing component of the trainer: every ``every`` steps and at the last one, a
    checkpoint; every rank waits for it (no rank runs ahead of a checkpoint it might have to
    resume from). ``format``: "full" (rank 0 writes one model.safetensors, a sharded model
    gathered first), "sharded" (every rank writes its shards: ``sharded_checkpoint``), "auto"
    (sharded when the model is)."""

    def __init__(
        self, run_dir: str | Path, *, every: int, keep: int, runtime: Runtime, format: str = "auto"
    ) -> None:
        self.run_dir = Path(run_dir)
        self.every = every
        self.keep = keep
        self.runtime = runtime
        self.format = format
        self.restored: dict[str, Any] = {}  # the trainer state ``restore`` loaded ({} before)

    def should_save(self, step: int, max_steps: int) -> bool:
        return step % self.every == 0 or step == max_steps

    def save(
        self,
        step: int,
        model: CausalModel,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Full: rank 0 writes; a sharded model's weights and optimizer state are gathered into
        rank 0 first (collectives every rank calls). Sharded: every rank writes its shards, rank 0
        the rest."""
        if self.format == "sharded" or (self.format == "auto" and is_sharded(model)):
            self._save_sharded(step, model, optimizer, scheduler, extra)
            return
        sharded = is_sharded(model)
        weights = full_state_dict(model) if sharded else None
        optim = optimizer_state(model, optimizer) if sharded else None
        if self.runtime.is_main:
            save_checkpoint(
                self.run_dir,
                step=step,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                keep=self.keep,
                extra=extra,
                weights=weights,
                optimizer_state=optim,
            )
        barrier(self.runtime)

    def _save_sharded(
        self,
        step: int,
        model: CausalModel,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        extra: dict[str, Any] | None,
    ) -> None:
        tmp, final = checkpoint_paths(self.run_dir, step)
        if self.runtime.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        barrier(self.runtime)
        # every rank: a full disk or a failed write on any rank raises on every rank (DCP gathers
        # the ranks' write errors), so none waits at a barrier the others never reach
        with _written_or_removed(tmp, final):
            save_shards(tmp, model, optimizer, self.runtime.rank)
        barrier(self.runtime)
        if self.runtime.is_main:
            with _written_or_removed(tmp, final):
                model.config.save(tmp / CONFIG_NAME)
                torch.save(trainer_state(step, None, scheduler, extra), tmp / TRAINER_STATE)
            publish_checkpoint(self.run_dir, tmp, final, self.keep)
        barrier(self.runtime)

    def restore(
        self,
        model: CausalModel,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> int:
        """Load the newest readable checkpoint into model, optimizer, scheduler and RNGs and return
        its step (0: none). A corrupt one is skipped for the one before it, with a warning."""
        found = checkpoint_dirs(self.run_dir)
        problems = []
        for directory in reversed(found):
            try:
                state = load_checkpoint(
                    directory, model=model, optimizer=optimizer, scheduler=scheduler, rank=self.runtime.rank
                )
            except CorruptCheckpointError as e:
                warnings.warn(f"{e}; trying the checkpoint before it", RuntimeWarning, stacklevel=2)
                problems.append(str(e))
                continue
            self.restored = state
            return int(state["step"])
        if found:
            raise CorruptCheckpointError(f"no readable checkpoint in {self.run_dir}: {'; '.join(problems)}")
        return 0
