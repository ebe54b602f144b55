"""The seeded ablation grid: every (variant, seed) of a task trained with the same budget into its
own run directory, ``OUT/<variant>/seed<k>/``, then one report (``grid_report``).

The budget (steps, batch, learning-rate schedule) is the task preset's with the user's overrides,
the same for every variant; variants change the model only (``variants``), with parameter
counts matched by the FFN width (``parameter_matching``); seeds set ``train.seed`` (model init and
data order). Each finished run leaves ``ablation.json`` (its parameters, steps, wall time and test
metrics) beside the trainer's files.

With ``resume`` a grid continues where it stopped: a finished run (``final/`` and its final
evaluation row) is skipped, its files untouched; an interrupted one continues from its latest
checkpoint; a run directory whose config differs from what the grid asks is refused, as the trainer
refuses a changed config on ``--resume``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateloop.experiments import language_model as lm
from gateloop.experiments import memory_horizon as mh
from gateloop.experiments.grid_run_dir import (
    check_same_config,
    finished_record,
    is_finished,
    read_record,
    record_from_final,
    write_record,
)
from gateloop.experiments.parameter_matching import match_parameters
from gateloop.experiments.run_config import RunConfig, field_names
from gateloop.experiments.tasks import TASKS, Task, get_task
from gateloop.experiments.variants import check_variants, variant_model
from gateloop.models import GateLoopConfig, TransformerConfig
from gateloop.training import Runtime, TrainConfig, current_runtime

__all__ = ["TASKS", "ConfigFields", "ablation_runs", "get_task", "parse_seeds", "parse_variants", "run_grid"]


@dataclass
class ConfigFields:
    """The fields the grid's ``--model.*`` / ``--data.*`` / ``--train.*`` flags may set: both
    tasks' (a field the chosen task's config lacks is refused when the grid is built)."""

    model: GateLoopConfig | TransformerConfig
    data: mh.MemoryHorizonData | lm.LMData
    train: TrainConfig


def parse_variants(text: str | None) -> list[str] | None:
    """``"gateloop,real"`` -> ``["gateloop", "real"]`` (checked; None: the task's default)."""
    if text is None:
        return None
    return check_variants([v.strip() for v in text.split(",") if v.strip()])


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (None: the task's default); a ``ValueError`` names --seeds."""
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated ints >= 0, got {text!r}") from None
    return check_seeds(seeds)


# ---------------------------------------------------------------------------- the grid's configs
def ablation_runs(
    task: Task,
    base: RunConfig,
    overrides: Mapping[str, Any],
    variants: Sequence[str],
    seeds: Sequence[int],
) -> dict[tuple[str, int], RunConfig]:
    """Every (variant, seed) run config, checked before anything trains. ``overrides`` go on the
    GateLoop base every variant derives from (a variant's own options win); Transformer-only
    fields (``model.rope_base``) go on the Transformer variant."""
    check_variants(list(variants))
    check_seeds(seeds)
    if "train.seed" in overrides:
        raise ValueError("set the seeds with --seeds, not --train.seed (each run gets one seed of the list)")
    gateloop_fields = field_names(GateLoopConfig)
    transformer_only = {
        k: v for k, v in overrides.items() if k.startswith("model.") and k[6:] not in gateloop_fields
    }
    base = base.with_overrides({k: v for k, v in overrides.items() if k not in transformer_only})
    if not isinstance(base.model, GateLoopConfig):
        raise ValueError("the ablation base must be a GateLoop run config (every variant derives from it)")
    runs = {}
    for variant in variants:
        run = variant_run(task, base, variant, transformer_only)
        for seed in seeds:
            runs[variant, seed] = run.with_overrides({"train.seed": seed})
    return runs


def variant_run(
    task: Task, base: RunConfig, variant: str, transformer_overrides: Mapping[str, Any]
) -> RunConfig:
    """``base`` with the model of ``variant``, its parameter count matched to ``base.model``'s."""
    model = match_parameters(variant_model(base.model, variant, task.head_dim), base.model)  # type: ignore[arg-type]
    run = dataclasses.replace(base, model=model)
    if isinstance(model, TransformerConfig):
        run = run.with_overrides(dict(transformer_overrides))
    return run


def check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"--seeds must be a non-empty list of ints >= 0, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: {seeds} names a seed twice")
    return seeds


def run_dir_of(out_dir: str | Path, variant: str, seed: int) -> Path:
    return Path(out_dir) / variant / f"seed{seed}"


# ---------------------------------------------------------------------------- the grid
def run_grid(
    task_name: str,
    base: RunConfig,
    out_dir: str | Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    resume: bool = False,
    report_only: bool = False,
    progress: bool = True,
    runtime: Runtime | None = None,
    name: str = "custom",
) -> list[dict[str, Any]]:
    """Train (or skip, or resume) every run of the grid, seed by seed (so that a stopped grid has
    whole seeds), rewriting the report after each; returns the per-run records in grid order.

    With ``report_only`` nothing trains: the report covers the finished runs and names the rest.
    """
    from gateloop.experiments.grid_report import write_report

    task = get_task(task_name)
    runtime = runtime or current_runtime()
    variants, seeds = list(variants or task.variants), list(seeds or task.seeds)
    runs = ablation_runs(task, base, overrides or {}, variants, seeds)
    shared = task.load(next(iter(runs.values())))
    resume = resume or report_only  # report_only reaches finished runs only, which resume skips
    order = [(variant, seed) for seed in seeds for variant in variants]
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for i, (variant, seed) in enumerate(order):
        run, run_dir = runs[variant, seed], run_dir_of(out_dir, variant, seed)
        if report_only and not is_finished(task, run_dir):
            continue
        records[variant, seed] = run_one(
            task, variant, run, run_dir, shared, resume=resume, progress=progress, runtime=runtime
        )
        if runtime.is_main and not report_only and i < len(order) - 1:
            write_report(
                task,
                runs,
                _grid_records(task, runs, order, records, out_dir),
                Path(out_dir),
                name=name,
                quiet=True,
            )
    if report_only and not records:
        raise ValueError(f"--report: no finished run of this grid under {out_dir} (train it first)")
    if runtime.is_main:
        write_report(task, runs, list(records.values()), Path(out_dir), name=name)
    return list(records.values())


def _grid_records(
    task: Task,
    runs: Mapping[tuple[str, int], RunConfig],
    order: Sequence[tuple[str, int]],
    gathered: Mapping[tuple[str, int], dict[str, Any]],
    out_dir: str | Path,
) -> list[dict[str, Any]]:
    """Every finished run's record in grid order: those gathered so far, and the saved records of
    runs later in the order that finished earlier (e.g. in a grid run with fewer variants)."""
    records = [
        gathered.get(key) or finished_record(task, runs[key], run_dir_of(out_dir, *key)) for key in order
    ]
    return [r for r in records if r]


def run_one(
    task: Task,
    variant: str,
    run: RunConfig,
    run_dir: Path,
    shared: Any,
    *,
    resume: bool,
    progress: bool,
    runtime: Runtime,
) -> dict[str, Any]:
    """One run of the grid: skipped when finished (with ``resume``), else trained; its record."""
    seed = run.train.seed
    if resume and is_finished(task, run_dir):
        check_same_config(run, run_dir)
        _say(runtime, f"{variant} seed {seed}: finished, skipped ({run_dir})")
        return read_record(run_dir) or record_from_final(task, variant, run, run_dir, shared, runtime)
    _say(runtime, f"{variant} seed {seed}: training into {run_dir}")
    result = task.train(run, run_dir, resume=resume, progress=progress, runtime=runtime, shared=shared)
    # Memory Horizon's trainer already evaluated the test set: not evaluated a second time
    metrics = task.final_metrics(result.evaluation)
    return write_record(
        task, variant, run, run_dir, result.model, result.steps, result.wall_time_s, shared, runtime, metrics
    )


def _say(runtime: Runtime, message: str) -> None:
    if runtime.is_main:
        print(f"[ablations] {message}", flush=True)
