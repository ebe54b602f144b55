"""``gateloop eval memory-horizon --compare OUT --run A --run B ...``: one table and one plot of how
far back each Memory Horizon run remembers, for controlled comparisons (a sweep of settings).

Each run's row: what it changes against the first run (its run config, field by field), its
steps, ``h90`` / ``h50`` (``span_horizon``), test accuracy, and its gradient norms from
``metrics.csv`` (median over the logged steps and the fraction of steps the clip scaled down), so
that an optimisation sweep reads off one table. Writes ``report_table.md``, ``runs.json`` and
``accuracy_by_span.png`` into OUT.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateloop.experiments.span_horizon import memory_horizons
from gateloop.training.metrics import MetricsLogger
from gateloop.training.run_dir import ADDED_FIELDS

# bookkeeping that says nothing about the experiment
IGNORED_FIELDS = frozenset({"format", "resolved", "train.log_every", "train.checkpoint_every"})


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def config_change(config: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    """The fields of ``config`` that differ from ``baseline``, as ``field=value`` (sorted)."""
    family = config.get("model", {}).get("model_type")
    if family != baseline.get("model", {}).get("model_type"):
        # another model family: its fields are not changes of the baseline's; name the family and
        # its size, and compare the data and training settings only
        model = config["model"]
        rest = config_change(
            {k: v for k, v in config.items() if k != "model"},
            {k: v for k, v in baseline.items() if k != "model"},
        )
        size = f"{family} (d_model {model.get('d_model')}, {model.get('n_layer')} layers)"
        return size if rest == "(baseline)" else f"{size}, {rest}"
    mine, base = flatten(config), flatten(baseline)

    def value(flat: dict[str, Any], key: str) -> Any:
        # a field added after a run was written means, by its absence, what ADDED_FIELDS says
        return flat.get(key, ADDED_FIELDS.get(key))

    changed = [
        f"{key}={value(mine, key)}"
        for key in sorted(mine.keys() | base.keys())
        if key not in IGNORED_FIELDS
        and key.split(".")[0] not in IGNORED_FIELDS
        and value(mine, key) != value(base, key)
    ]
    return ", ".join(changed) or "(baseline)"


def run_summary(run_dir: Path, baseline_config: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the comparison from a run directory with ``config.json`` and ``eval.json``."""
    config = json.loads((run_dir / "config.json").read_text())
    evaluation = json.loads((run_dir / "eval.json").read_text())
    rows = [r for r in metric_rows(run_dir) if "grad_norm" in r]
    clipped = [r["clipped_fraction"] for r in rows if "clipped_fraction" in r]
    # a grid's run directories are VARIANT/seedN: name them by both
    name = f"{run_dir.parent.name}-{run_dir.name}" if run_dir.name.startswith("seed") else run_dir.name
    return {
        "run": name,
        "dir": str(run_dir),
        "change": config_change(config, baseline_config),
        "steps": evaluation.get("steps", config.get("resolved", {}).get("max_steps")),
        **memory_horizons(evaluation["accuracy_by_span"]),
        "test_accuracy": evaluation["test_accuracy"],
        "median_grad_norm": statistics.median(r["grad_norm"] for r in rows) if rows else None,
        "max_grad_norm": max((r.get("grad_norm_max", r["grad_norm"]) for r in rows), default=None),
        "clipped_fraction": sum(clipped) / len(clipped) if clipped else None,
        "accuracy_by_span": evaluation["accuracy_by_span"],
    }


def metric_rows(run_dir: Path) -> list[dict[str, Any]]:
    """A run's metrics rows: ``metrics.jsonl``, or ``metrics.csv`` alone (what results/ keeps of a
    run) with its numbers read back and its empty cells left out."""
    rows = MetricsLogger(run_dir).read()
    csv_path = run_dir / "metrics.csv"
    if rows or not csv_path.is_file():
        return rows
    with csv_path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table_lines(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| run | change | steps | h90 | h50 | accuracy | median ‖g‖ | max ‖g‖ | steps clipped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        clipped = "—" if s["clipped_fraction"] is None else f"{s['clipped_fraction']:.0%}"
        lines.append(
            f"| {s['run']} | {s['change']} | {s['steps']} | {_cell(s['h90'])} | {_cell(s['h50'])} | "
            f"{_cell(s['test_accuracy'])} | {_cell(s['median_grad_norm'], 2)} | "
            f"{_cell(s['max_grad_norm'], 1)} | {clipped} |"
        )
    return lines


def write_comparison(run_dirs: Sequence[Path], out_dir: Path) -> list[dict[str, Any]]:
    """The comparison of ``run_dirs`` (the first is the baseline of the change column) into ``out_dir``."""
    from gateloop.plots import plot_accuracy_by_span

    if not run_dirs:
        raise ValueError("--compare needs at least one --run")
    baseline = json.loads((run_dirs[0] / "config.json").read_text())
    summaries = [run_summary(d, baseline) for d in run_dirs]
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"h90 / h50: first span where the 8-wide windowed accuracy falls below 0.9 / 0.5 (— : never). "
        f"Change: against {run_dirs[0].name}.",
        "",
        *table_lines(summaries),
    ]
    (out_dir / "report_table.md").write_text("\n".join(lines) + "\n")
    (out_dir / "runs.json").write_text(
        json.dumps([{k: v for k, v in s.items() if k != "accuracy_by_span"} for s in summaries], indent=2)
        + "\n"
    )
    plot_accuracy_by_span(
        {s["run"]: s["accuracy_by_span"] for s in summaries}, out_dir / "accuracy_by_span.png", bin_width=8
    )
    print("\n".join(lines))
    return summaries
