"""The ablation grid's view of one run directory: whether the run finished, whether it was made
with the config the grid asks for, its wall time over sessions, and its record (``ablation.json``:
parameters, steps, wall time and test metrics)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateloop.experiments.run_config import SECTIONS, RunConfig
from gateloop.experiments.tasks import Task
from gateloop.machine import cpu_name
from gateloop.models import TransformerConfig
from gateloop.models.base import CausalModel
from gateloop.models.registry import model_class
from gateloop.training import MetricsLogger, Runtime, read_run_config
from gateloop.training.files import atomic_write_text
from gateloop.training.run_dir import config_differences
from gateloop.training.wall_time import read_wall_time

RECORD_NAME = "ablation.json"  # a finished run's numbers, written by the grid


def is_finished(task: Task, run_dir: Path) -> bool:
    """``final/`` holds weights and the metrics hold the final evaluation (at the last step)."""
    if not (run_dir / "final" / "model.safetensors").is_file() or not (run_dir / "config.json").is_file():
        return False
    last = read_run_config(run_dir).get("resolved", {}).get("max_steps")
    rows = MetricsLogger(run_dir).read()
    return any(r.get("step") == last and task.eval_key in r for r in rows)


def config_changes(run: RunConfig, run_dir: Path) -> list[str]:
    """How the config saved in ``run_dir`` differs from ``run`` (the trainer's rule for
    ``--resume``: bookkeeping fields may differ, nothing else); empty when it is the same run."""
    saved = read_run_config(run_dir)
    expected = run.to_saved_dict()
    keys = ("task", *SECTIONS)
    return config_differences({k: saved.get(k) for k in keys}, {k: expected.get(k) for k in keys})


def check_same_config(run: RunConfig, run_dir: Path) -> None:
    """Refuse a finished run whose config is not the one the grid asks for."""
    changes = config_changes(run, run_dir)
    if changes:
        raise ValueError(
            f"--resume with a different config than {run_dir / 'config.json'}: "
            + "; ".join(changes[:8])
            + " (use another --out for a different grid, or resume with the original settings)"
        )


def write_record(
    task: Task,
    variant: str,
    run: RunConfig,
    run_dir: Path,
    model: CausalModel,
    steps: int,
    wall_time_s: float | None,
    shared: Any,
    runtime: Runtime,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The run's numbers (test metrics of ``model``: ``metrics`` when the caller has them, else
    evaluated now), written to ``RUN/ablation.json``."""
    if not runtime.is_main:
        return {}
    record = {
        "variant": variant,
        "seed": run.train.seed,
        "family": "transformer" if isinstance(run.model, TransformerConfig) else "gateloop",
        "parameters": model.num_parameters(),
        "non_embedding_parameters": model.num_parameters(non_embedding=True),
        "d_channel_mixing": run.model.d_channel_mixing,
        "n_head": getattr(run.model, "n_head", None),
        "steps": steps,
        "wall_time_s": wall_time_s,
        # where the wall time was spent: metrics on another CPU model differ in the last digits
        "threads": read_run_config(run_dir).get("resolved", {}).get("threads"),
        "cpu": cpu_name(),
        "metrics": metrics if metrics is not None else task.evaluate(model, run, shared),
    }
    atomic_write_text(run_dir / RECORD_NAME, json.dumps(record, indent=2) + "\n")
    return record


def read_record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RECORD_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def finished_record(task: Task, run: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The saved record of a finished run made with ``run``'s config; None for any other run (one
    not finished, without a record, or of another config: the grid refuses that when it gets there)."""
    if not is_finished(task, run_dir) or config_changes(run, run_dir):
        return None
    return read_record(run_dir)


def record_from_final(
    task: Task, variant: str, run: RunConfig, run_dir: Path, shared: Any, runtime: Runtime
) -> dict[str, Any]:
    """A finished run without a record (killed after ``final/``): evaluate its final weights."""
    model = model_class(run.model).from_pretrained(run_dir / "final", device=runtime.device)
    steps = int(read_run_config(run_dir)["resolved"]["max_steps"])
    return write_record(task, variant, run, run_dir, model, steps, read_wall_time(run_dir), shared, runtime)
