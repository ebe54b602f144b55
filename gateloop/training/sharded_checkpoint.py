"""Sharded checkpoints: ``torch.distributed.checkpoint`` (DCP), each rank writing its own shards.

A full checkpoint gathers the whole model and optimizer state on every rank and caps the model at
what one rank's memory holds; a sharded one never gathers. Layout (beside the full layout's
``config.json`` and ``trainer_state.pt``, which rank 0 writes; the trainer state then holds no
optimizer)::

    checkpoints/step_00000500/config.json        model config
    checkpoints/step_00000500/trainer_state.pt   step, scheduler, rank 0's RNG, the trainer's extras
    checkpoints/step_00000500/sharded/           DCP: .metadata + one .distcp file per rank
                                                 (model weights and AdamW's state, by parameter name)
    checkpoints/step_00000500/rng/rank_00001.pt  each rank's own RNG (dropout draws differ by rank)

Every rank writes into the checkpoint's temporary directory (the file system is shared across
ranks, as DCP assumes); DCP fsyncs each file; after a barrier rank 0 writes its files and
publishes the directory with one rename (``files.publish_dir``), so a checkpoint that looks
complete is complete, as for a full one. A sharded checkpoint loads into any layout DCP can plan
for (FSDP over another number of ranks, DDP, one process): it reads the slices each rank needs
(the trainer still refuses to resume a run on another number of ranks: its data order depends on
it). ``consolidate`` writes one from it as a ``save_pretrained`` directory (one
model.safetensors), without a process group: what ``gateloop convert consolidate`` runs.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gateloop.file_errors import read_json_object
from gateloop.models.pretrained import CONFIG_NAME, check_same_config, save_model
from gateloop.training.files import fsync_path
from gateloop.training.rng_state import restore_rng, rng_state

SHARDS = "sharded"
RNG_DIR = "rng"


class ShardedCheckpointError(ValueError):
    """A sharded checkpoint that cannot be read (torn or missing shard files, not a checkpoint)."""


def is_sharded_checkpoint(directory: Path) -> bool:
    return (directory / SHARDS / ".metadata").is_file()


def save_shards(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rank: int) -> None:
    """Every rank (a collective): its shards of the model and optimizer into ``directory/sharded``
    and its RNG into ``directory/rng/rank_<rank>.pt``, each file fsynced."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    with _single_process_quiet():
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory / SHARDS))
    rng_path = directory / RNG_DIR / f"rank_{rank:05d}.pt"
    rng_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), rng_path)
    fsync_path(rng_path)


def load_shards(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, rank: int | None
) -> None:
    """Every rank (a collective): the model (and optimizer) state from ``directory/sharded``, and
    ``rank``'s RNG when the checkpoint holds it (None: no RNG restored). ShardedCheckpointError
    when DCP cannot read it (on every rank alike: DCP gathers the ranks' read errors); ValueError
    when its model config is not ``model``'s."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    check_same_config(model, directory)  # type: ignore[arg-type]
    optimizers = [] if optimizer is None else [optimizer]
    model_state, optim_state = get_state_dict(model, optimizers)
    state: dict[str, Any] = {"model": model_state}
    if optimizer is not None:
        state["optim"] = optim_state
    try:
        with _single_process_quiet():
            dcp.load(state, checkpoint_id=str(directory / SHARDS))
    # DCP's CheckpointException (a BaseException: Exception does not catch it) carries every rank's
    # read error to every rank; without a process group the error itself is raised
    except (CheckpointException, Exception) as e:
        raise ShardedCheckpointError(f"{directory / SHARDS} cannot be read ({_read_errors(e)})") from e
    set_state_dict(
        model, optimizers, model_state_dict=state["model"], optim_state_dict=state.get("optim", {})
    )
    rng_path = None if rank is None else directory / RNG_DIR / f"rank_{rank:05d}.pt"
    if rng_path is not None and rng_path.is_file():
        restore_rng(torch.load(rng_path, map_location="cpu", weights_only=True))


def _read_errors(error: BaseException) -> str:
    """One line per failing rank (DCP's own message holds every rank's whole traceback)."""
    failures = getattr(error, "failures", None)
    if not failures:
        return f"{type(error).__name__}: {error}"
    return "; ".join(
        f"rank {rank}: {type(e).__name__} {e}".rstrip() for rank, (e, _) in sorted(failures.items())
    )


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """Without a process group DCP warns that it assumes one process: that is what is meant here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*process group.*|.*single process.*|.*uninitialized.*")
        yield


def consolidate(directory: str | Path, out: str | Path) -> Path:
    """A sharded checkpoint's model as one ``save_pretrained`` directory ``out`` (config.json +
    model.safetensors), read in this process alone; returns ``out``."""
    from gateloop.models.registry import build_model, config_class

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory (a checkpoints/step_N/ expected)")
    if not is_sharded_checkpoint(directory):
        raise ShardedCheckpointError(
            f"{directory} is not a sharded checkpoint (no {SHARDS}/.metadata): a checkpoint with a "
            "model.safetensors is already one model directory"
        )
    saved = read_json_object(directory / CONFIG_NAME, "a checkpoint's model config")
    model = build_model(config_class(saved.get("model_type")).from_dict(saved))
    load_shards(directory, model, None, rank=None)  # a model only: no optimizer, no generators
    return save_model(model, out)
