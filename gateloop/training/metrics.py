"""Metrics to ``metrics.jsonl`` and ``metrics.csv`` in a run directory (append-only, resumable),
and the trainer's logging component."""

from __future__ import annotations

import csv
import io
import json
import time
import warnings
from pathlib import Path
from typing import Any

from gateloop.file_errors import writing
from gateloop.training.distributed import Runtime
from gateloop.training.files import atomic_write_text
from gateloop.training.step_time import StepTimeMonitor
from gateloop.training.trackers import Tracker


class MetricsLogger:
    """Appends one row per call; ``truncate_after(step)`` drops rows a killed run wrote after its
    last checkpoint, so a resumed run's log has every step exactly once."""

    def __init__(self, run_dir: str | Path) -> None:
        self.jsonl = Path(run_dir) / "metrics.jsonl"
        self.csv = Path(run_dir) / "metrics.csv"
        self.trackers: list[Tracker] = []  # TensorBoard / W&B: every row goes to them too

    def log(self, row: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log(row)
        with writing(self.jsonl), self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        fields = self._csv_fields()
        if fields is not None and all(k in fields for k in row):
            with writing(self.csv), self.csv.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=fields).writerow(row)
        else:  # a new column: rewrite the CSV from the JSONL
            self._write_csv(self.read())

    def _csv_fields(self) -> list[str] | None:
        if not self.csv.exists():
            return None
        with self.csv.open(newline="") as f:
            return next(csv.reader(f), None)

    def read(self) -> list[dict[str, Any]]:
        """Every row; a torn last line (a kill or a full disk mid-write) is dropped with a
        warning, a bad line anywhere else is an error naming the file and line."""
        if not self.jsonl.exists():
            return []
        lines = self.jsonl.read_text(errors="replace").splitlines()
        rows = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                if number < len(lines):
                    raise ValueError(f"{self.jsonl} line {number} is not valid JSON ({e})") from e
                warnings.warn(
                    f"{self.jsonl}: dropped a torn last line ({line[:60]!r})", RuntimeWarning, stacklevel=2
                )
        return rows

    def truncate_after(self, step: int) -> None:
        """Keep the rows up to ``step`` (a resumed run's log then has every step once); both files
        are rewritten atomically, so a kill here loses nothing."""
        rows = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in rows))
        self._write_csv(rows)

    def _write_csv(self, rows: list[dict[str, Any]]) -> None:
        # the CSV is rewritten from the JSONL so that its columns cover every key seen so far
        fields: list[str] = []
        for r in rows:
            fields.extend(k for k in r if k not in fields)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.csv, out.getvalue())


class TrainLog:
    """The logging component of the trainer: a training-metrics row every ``every`` steps and at
    the last one (rank 0 writes), a tqdm bar, tokens per second, and the step-time watch."""

    def __init__(
        self,
        metrics: MetricsLogger,
        *,
        every: int,
        runtime: Runtime,
        tokens_per_step: int = 0,
        progress: bool = True,
    ) -> None:
        self.metrics = metrics
        self.every = every
        self.runtime = runtime
        self.tokens_per_step = tokens_per_step
        self.progress = progress and runtime.is_main
        self.monitor = StepTimeMonitor()
        self.last: dict[str, Any] = {}
        self._bar: Any = None
        self._window_start = time.perf_counter()
        self._window_steps = 0

    def open(self, *, initial: int, total: int) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, initial=initial, disable=not self.progress, dynamic_ncols=True)
        self._window_start, self._window_steps = time.perf_counter(), 0

    def step_done(self, seconds: float) -> None:
        self.monitor.record(seconds)
        self._window_steps += 1
        if self._bar is not None:
            self._bar.update(1)

    def should_log(self, step: int, max_steps: int) -> bool:
        return step % self.every == 0 or step == max_steps

    def write(self, step: int, values: dict[str, Any], extras: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self._window_start
        rate = {}
        if self.tokens_per_step:
            rate = {"tokens_per_s": self._window_steps * self.tokens_per_step / elapsed}
        # the loss function's extras may be tensors (not read on steps that do not log)
        self.last = {"step": step, **values, **rate, **{k: float(v) for k, v in extras.items()}}
        if self.runtime.is_main:
            self.metrics.log(self.last)
        if self._bar is not None:
            postfix = {"loss": f"{values['loss']:.4f}", "lr": f"{values['lr']:.2e}"}
            if rate:
                postfix["tok/s"] = f"{rate['tokens_per_s']:.0f}"
            self._bar.set_postfix(postfix)
        self._window_start, self._window_steps = time.perf_counter(), 0

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
