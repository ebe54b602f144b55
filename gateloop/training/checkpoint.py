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

from gateloop.models.base import CausalModel, load_weights
from gateloop.training.distributed import Runtime, barrier

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
    keep: int = 2,
) -> Path:
    """Write ``checkpoints/step_<step>`` (weights, config, optimizer, scheduler, every RNG) and
    prune all but the newest ``keep``."""
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
        "cuda_rng": _cuda_rng_states(),
        "python_rng": random.getstate(),
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
    load_weights(model, directory)  # refuses a checkpoint whose model config differs
    # weights_only: the trainer state holds tensors and plain Python values only
    state = torch.load(directory / TRAINER_STATE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(_as_tuple(state["python_rng"]))
    _restore_cuda_rng(state.get("cuda_rng"))
    return state


def _cuda_rng_states() -> list[torch.Tensor] | None:
    """Every visible GPU's generator state, so a resumed GPU run draws what it would have drawn
    (dropout, sampling); None on machines without CUDA."""
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _restore_cuda_rng(states: list[torch.Tensor] | None) -> None:
    if states is None:
        return
    if not torch.cuda.is_available():
        # a GPU run continued on the CPU: nothing to restore, its CPU generator is restored above
        return
    if len(states) != torch.cuda.device_count():
        raise ValueError(
            f"the checkpoint holds CUDA RNG states of {len(states)} GPUs, this machine has "
            f"{torch.cuda.device_count()}: resume on the same number of visible GPUs"
        )
    torch.cuda.set_rng_state_all(states)


def _as_tuple(value: Any) -> Any:
    """random.setstate wants tuples; serialisation may turn them into lists."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


class Checkpointer:
    """The checkpointing component of the trainer: every ``every`` steps and at the last one,
    rank 0 writes a checkpoint; every rank waits for it (no rank runs ahead of a checkpoint it
    might have to resume from)."""

    def __init__(self, run_dir: str | Path, *, every: int, keep: int, runtime: Runtime) -> None:
        self.run_dir = Path(run_dir)
        self.every = every
        self.keep = keep
        self.runtime = runtime

    def should_save(self, step: int, max_steps: int) -> bool:
        return step % self.every == 0 or step == max_steps

    def save(
        self,
        step: int,
        model: CausalModel,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> None:
        if self.runtime.is_main:
            save_checkpoint(
                self.run_dir, step=step, model=model, optimizer=optimizer, scheduler=scheduler, keep=self.keep
            )
        barrier(self.runtime)

    def latest(self) -> Path | None:
        found = checkpoint_dirs(self.run_dir)
        return found[-1] if found else None

    def restore(
        self,
        model: CausalModel,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> int:
        """Load the latest checkpoint into model, optimizer, scheduler and RNGs; its step (0: none)."""
        latest = self.latest()
        if latest is None:
            return 0
        state = load_checkpoint(latest, model=model, optimizer=optimizer, scheduler=scheduler)
        return int(state["step"])
