"""Training checkpoints: model weights (safetensors + config.json) beside the trainer state.

Layout of a run directory::

    run_dir/checkpoints/step_00000500/config.json         model config
    run_dir/checkpoints/step_00000500/model.safetensors   model weights (no pickle)
    run_dir/checkpoints/step_00000500/trainer_state.pt    optimizer, scheduler, RNG, step

A checkpoint is written to a temporary directory and renamed into place, so a run killed while
saving never leaves a half-written ``step_*`` directory behind.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import torch

from gateloop.models.base import CausalModel

TRAINER_STATE = "trainer_state.pt"


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / TRAINER_STATE).is_file())


def trained_model_dir(run_dir: str | Path) -> Path:
    """Where a run's weights are: ``final/`` when training finished, else the latest checkpoint."""
    run_dir = Path(run_dir)
    if (run_dir / "final").is_dir():
        return run_dir / "final"
    found = checkpoint_dirs(run_dir)
    if not found:
        raise FileNotFoundError(f"{run_dir} has no final model and no checkpoint")
    return found[-1]


def save_checkpoint(
    run_dir: str | Path,
    *,
    step: int,
    model: CausalModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "extra": extra or {},
    }
    torch.save(state, tmp / TRAINER_STATE)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in checkpoint_dirs(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def load_checkpoint(
    directory: str | Path,
    *,
    model: CausalModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG in place; returns the trainer state dict."""
    directory = Path(directory)
    loaded = type(model).from_pretrained(directory)
    if loaded.config != model.config:
        raise ValueError(f"checkpoint {directory} has config {loaded.config}, the run has {model.config}")
    model.load_state_dict(loaded.state_dict())
    # weights_only: the trainer state holds tensors and plain Python values only
    state = torch.load(directory / TRAINER_STATE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(_as_tuple(state["python_rng"]))
    return state


def _as_tuple(value: Any) -> Any:
    """random.setstate wants tuples; serialisation may turn them into lists."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value
