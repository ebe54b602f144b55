"""Metrics to ``metrics.jsonl`` and ``metrics.csv`` in a run directory (append-only, resumable)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends one row per call; ``truncate_after(step)`` drops rows a killed run wrote after its
    last checkpoint, so a resumed run's log has every step exactly once."""

    def __init__(self, run_dir: str | Path) -> None:
        self.jsonl = Path(run_dir) / "metrics.jsonl"
        self.csv = Path(run_dir) / "metrics.csv"

    def log(self, row: dict[str, Any]) -> None:
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        fields = self._csv_fields()
        if fields is not None and all(k in fields for k in row):
            with self.csv.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=fields).writerow(row)
        else:  # a new column: rewrite the CSV from the JSONL
            self._write_csv(self.read())

    def _csv_fields(self) -> list[str] | None:
        if not self.csv.exists():
            return None
        with self.csv.open(newline="") as f:
            return next(csv.reader(f), None)

    def read(self) -> list[dict[str, Any]]:
        if not self.jsonl.exists():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        rows = [r for r in self.read() if r.get("step", 0) <= step]
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
        self._write_csv(rows)

    def _write_csv(self, rows: list[dict[str, Any]]) -> None:
        # the CSV is rewritten from the JSONL so that its columns cover every key seen so far
        fields: list[str] = []
        for r in rows:
            fields.extend(k for k in r if k not in fields)
        with self.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
