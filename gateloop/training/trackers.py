"""Experiment trackers beside metrics.jsonl/.csv: TensorBoard and Weights & Biases (offline).

Each is imported only when a run asks for it (``--train.log-to tensorboard,wandb``): the core
import never loads them. Every metrics row (training and evaluation) goes to each tracker, keyed by
its ``step``; a resumed run first drops what a killed run logged after its checkpoint.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Protocol

TRACKERS = ("tensorboard", "wandb")


class Tracker(Protocol):
    def log(self, row: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def parse_trackers(text: str) -> tuple[str, ...]:
    """``"tensorboard,wandb"`` -> names; unknown names are a ValueError."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"log_to must name trackers from {', '.join(TRACKERS)}; got {', '.join(unknown)}")
    return names


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


class TensorBoardTracker:
    """Event files under ``run_dir/tensorboard`` (``tensorboard --logdir RUN/tensorboard``)."""

    def __init__(self, run_dir: Path, resume_step: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("--train.log-to tensorboard needs `pip install tensorboard`") from e
        # purge_step: events a killed run wrote after its checkpoint are dropped on resume
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step or None)

    def log(self, row: dict[str, Any]) -> None:
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, global_step=int(row["step"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run in offline mode under ``run_dir/wandb`` (``wandb sync`` uploads it)."""

    def __init__(self, run_dir: Path, run_config: dict[str, Any], resume_step: int) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError("--train.log-to wandb needs `pip install wandb`") from e
        # one W&B run per run directory: a resumed run continues it (id from the directory's path)
        run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(
            mode="offline", dir=str(run_dir), config=run_config, name=run_dir.name, id=run_id, resume="allow"
        )

    def log(self, row: dict[str, Any]) -> None:
        self.run.log(_scalars(row), step=int(row["step"]))

    def close(self) -> None:
        self.run.finish()


def open_trackers(
    names: tuple[str, ...], run_dir: Path, run_config: dict[str, Any], resume_step: int
) -> list[Tracker]:
    trackers: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(run_dir, resume_step))
        else:
            trackers.append(WandbTracker(run_dir, run_config, resume_step))
    return trackers
