"""Wall time spent on a run directory, summed over the sessions that trained it
(``RUN/wall_time.json``, counted by ``Trainer.train`` for every run), so that a report of a run
continued with ``--resume`` gives its whole cost, not the last session's.

A session stopped by an exception (Ctrl-C, SIGTERM) counts; one killed by SIGKILL does not. A
run directory that already held training when its first counted session began (made before wall
times were kept, or whose first session was SIGKILLed) has an unknown total: ``None``, for good.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateloop.training.distributed import Runtime
from gateloop.training.files import atomic_write_text

WALL_TIME_NAME = "wall_time.json"


@dataclass
class WallTime:
    """The run's total in seconds once the session ends (None: unknown, see the module)."""

    seconds: float | None = None


def read_wall_time(run_dir: Path) -> float | None:
    """The run's total so far (None when unknown or never counted)."""
    path = run_dir / WALL_TIME_NAME
    return json.loads(path.read_text())["seconds"] if path.is_file() else None


@contextmanager
def counted_wall_time(
    run_dir: Path, runtime: Runtime, started_empty: bool | None = None
) -> Iterator[WallTime]:
    """Count the session's seconds into ``run_dir``'s total, also when the session raises.
    ``started_empty``: whether ``run_dir`` did not exist when the session began (default: looked
    up now; the trainer looks before its lock creates the directory)."""
    path = run_dir / WALL_TIME_NAME
    if started_empty is None:
        started_empty = not run_dir.exists()
    # a directory with training in it but no total: its earlier sessions went uncounted
    before = read_wall_time(run_dir) if path.is_file() else (0.0 if started_empty else None)
    total = WallTime()
    start = time.perf_counter()
    try:
        yield total
    finally:
        total.seconds = None if before is None else before + time.perf_counter() - start
        if runtime.is_main and run_dir.is_dir():
            atomic_write_text(path, json.dumps({"seconds": total.seconds}) + "\n")


def minutes(seconds: float | None) -> str:
    """``12.3 min`` for a report's table; ``unknown`` where earlier sessions went uncounted."""
    return "unknown" if seconds is None else f"{seconds / 60:.1f} min"
