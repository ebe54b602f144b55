"""The seeded ablation grid: every (variant, seed) of a task trained with the same budget into its
own run directory, ``OUT/<variant>/seed<k>/``, then one report (``ablations_report``).

The budget (steps, batch, learning-rate schedule) is the task preset's with the user's overrides,
the same for every variant; variants change the model only (``ablation_variants``), with parameter
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
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateloop.experiments import language_model as lm
from gateloop.experiments import memory_horizon as mh
from gateloop.experiments.ablation_variants import VARIANTS, check_variants, variant_model
from gateloop.experiments.parameter_matching import count_non_embedding, match_parameters
from gateloop.experiments.run_config import SECTIONS, RunConfig, field_names, model_class
from gateloop.models import GateLoopConfig, TransformerConfig
from gateloop.models.base import CausalModel
from gateloop.training import (
    MetricsLogger,
    Runtime,
    TrainConfig,
    TrainResult,
    current_runtime,
    read_run_config,
)
from gateloop.training.files import atomic_write_text
from gateloop.training.run_dir import config_differences

RECORD_NAME = "ablation.json"  # a finished run's numbers, written by the grid
WALL_TIME_NAME = "wall_time.json"  # seconds spent training the run, summed over its sessions


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool
    digits: int = 3


@dataclass(frozen=True)
class AblationTask:
    """What the grid needs of a task: its presets, defaults, metrics and one-run functions."""

    name: str
    presets: Mapping[str, RunConfig]
    head_dim: int  # head size of the multi-head variants and the Transformer
    variants: tuple[str, ...]  # default variants
    seeds: tuple[int, ...]  # default seeds
    metrics: tuple[Metric, ...]  # the headline metric first
    eval_key: str  # a key of the trainer's final evaluation row
    load: Callable[[RunConfig], Any]  # data every run of the grid shares
    train: Callable[..., TrainResult]  # (run, run_dir, resume=, progress=, runtime=, shared=)
    evaluate: Callable[[CausalModel, RunConfig, Any], dict[str, float]]  # test metrics of a model
    saved_config: Callable[[RunConfig], dict[str, Any]]  # the run config as the run dir holds it


# ---------------------------------------------------------------------------- the two tasks
def _mh_train(run: Any, run_dir: Path, *, shared: Any, **kwargs: Any) -> TrainResult:
    return mh.train(run, run_dir, data=shared, **kwargs)


def _mh_evaluate(model: CausalModel, run: Any, shared: Any) -> dict[str, float]:
    result = mh.evaluate(model, shared["x_test"], shared["y_test"], run.data.reset_id)
    return {k: result[k] for k in ("test_accuracy", "test_accuracy_excluding_resets", "test_loss")}


def _lm_load(run: Any) -> Any:
    if not run.data.path:
        raise ValueError("--task lm needs --data DIR (a dataset written by `gateloop data prepare`)")
    return lm.TokenDataset(run.data.path)


def _lm_train(run: Any, run_dir: Path, *, shared: Any, **kwargs: Any) -> TrainResult:
    return lm.train(run, run_dir, **kwargs)


def _lm_evaluate(model: CausalModel, run: Any, shared: Any) -> dict[str, float]:
    seq_len = run.data.seq_len
    test = lm.evaluate_perplexity(model, shared["test"], seq_len=seq_len)
    val = lm.evaluate_perplexity(model, shared["val"], seq_len=seq_len, max_tokens=run.data.eval_tokens)
    return {
        "test_perplexity": test["perplexity"],
        "test_nll": test["nll"],
        "val_perplexity": val["perplexity"],
    }


def _lm_saved_config(run: Any) -> dict[str, Any]:
    saved = run.to_dict()
    return {**saved, "data": {**saved["data"], "path": str(Path(run.data.path).resolve())}}


TASKS: dict[str, AblationTask] = {
    "memory-horizon": AblationTask(
        name="memory-horizon",
        presets=mh.PRESETS,
        head_dim=16,  # 4 heads at d_model 64, as TransformerConfig.memory_horizon
        variants=tuple(VARIANTS),
        seeds=(0, 1, 2),
        metrics=(
            Metric("test_accuracy", "test accuracy", True),
            Metric("test_accuracy_excluding_resets", "excluding resets", True),
            Metric("test_loss", "test loss", False),
        ),
        eval_key="test_accuracy",
        load=lambda run: mh.load_data(run.data),
        train=_mh_train,
        evaluate=_mh_evaluate,
        saved_config=lambda run: run.to_dict(),
    ),
    "lm": AblationTask(
        name="lm",
        presets=lm.PRESETS,
        head_dim=64,  # 3 heads at d_model 192, as `gateloop experiment lm`'s Transformer
        variants=("gateloop", "real", "fixed", "transformer"),
        seeds=(0, 1),
        metrics=(
            Metric("test_perplexity", "test perplexity", False, 2),
            Metric("val_perplexity", "val perplexity", False, 2),
            Metric("test_nll", "test NLL", False),
        ),
        eval_key="val_loss",
        load=_lm_load,
        train=_lm_train,
        evaluate=_lm_evaluate,
        saved_config=_lm_saved_config,
    ),
}


def get_task(name: str) -> AblationTask:
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {name!r}")
    return TASKS[name]


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
    task: AblationTask,
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
    task: AblationTask, base: RunConfig, variant: str, transformer_overrides: Mapping[str, Any]
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
    progress: bool = True,
    runtime: Runtime | None = None,
    name: str = "custom",
) -> list[dict[str, Any]]:
    """Train (or skip, or resume) every run of the grid, then write the report; returns the
    per-run records in grid order (seed by seed, so that a stopped grid has whole seeds)."""
    from gateloop.experiments.ablations_report import write_report

    task = get_task(task_name)
    runtime = runtime or current_runtime()
    variants, seeds = list(variants or task.variants), list(seeds or task.seeds)
    runs = ablation_runs(task, base, overrides or {}, variants, seeds)
    shared = task.load(next(iter(runs.values())))
    records = []
    for seed in seeds:
        for variant in variants:
            run_dir = run_dir_of(out_dir, variant, seed)
            records.append(
                run_one(
                    task,
                    runs[variant, seed],
                    run_dir,
                    shared,
                    resume=resume,
                    progress=progress,
                    runtime=runtime,
                )
            )
    if runtime.is_main:
        write_report(task, runs, records, Path(out_dir), name=name)
    return records


def run_one(
    task: AblationTask,
    run: RunConfig,
    run_dir: Path,
    shared: Any,
    *,
    resume: bool,
    progress: bool,
    runtime: Runtime,
) -> dict[str, Any]:
    """One run of the grid: skipped when finished (with ``resume``), else trained; its record."""
    variant, seed = run_dir.parent.name, run.train.seed
    if resume and is_finished(task, run_dir):
        check_same_config(task, run, run_dir)
        _say(runtime, f"{variant} seed {seed}: finished, skipped ({run_dir})")
        return read_record(run_dir) or _record_from_final(task, run, run_dir, shared, runtime)
    _say(runtime, f"{variant} seed {seed}: training into {run_dir}")
    start = time.perf_counter()
    try:
        result = task.train(run, run_dir, resume=resume, progress=progress, runtime=runtime, shared=shared)
    except KeyboardInterrupt:
        add_wall_time(run_dir, time.perf_counter() - start, runtime)
        raise
    wall = add_wall_time(run_dir, time.perf_counter() - start, runtime)
    return write_record(task, run, run_dir, result.model, result.steps, wall, shared, runtime)


def _say(runtime: Runtime, message: str) -> None:
    if runtime.is_main:
        print(f"[ablations] {message}", flush=True)


# ---------------------------------------------------------------------------- run directories
def is_finished(task: AblationTask, run_dir: Path) -> bool:
    """``final/`` holds weights and the metrics hold the final evaluation (at the last step)."""
    if not (run_dir / "final" / "model.safetensors").is_file() or not (run_dir / "config.json").is_file():
        return False
    last = read_run_config(run_dir).get("resolved", {}).get("max_steps")
    rows = MetricsLogger(run_dir).read()
    return any(r.get("step") == last and task.eval_key in r for r in rows)


def check_same_config(task: AblationTask, run: RunConfig, run_dir: Path) -> None:
    """Refuse a finished run whose config is not the one the grid asks for (the trainer's rule for
    ``--resume``: bookkeeping fields may differ, nothing else)."""
    saved = read_run_config(run_dir)
    expected = task.saved_config(run)
    keys = ("task", *SECTIONS)
    changes = config_differences({k: saved.get(k) for k in keys}, {k: expected.get(k) for k in keys})
    if changes:
        raise ValueError(
            f"--resume with a different config than {run_dir / 'config.json'}: "
            + "; ".join(changes[:8])
            + " (use another --out for a different grid, or resume with the original settings)"
        )


def add_wall_time(run_dir: Path, seconds: float, runtime: Runtime) -> float:
    """Add a session's seconds to the run's total (a session killed by SIGKILL is not counted)."""
    path = run_dir / WALL_TIME_NAME
    total = seconds + (json.loads(path.read_text())["seconds"] if path.is_file() else 0.0)
    if runtime.is_main and run_dir.is_dir():
        atomic_write_text(path, json.dumps({"seconds": total}) + "\n")
    return total


def write_record(
    task: AblationTask,
    run: RunConfig,
    run_dir: Path,
    model: CausalModel,
    steps: int,
    wall_time_s: float | None,
    shared: Any,
    runtime: Runtime,
) -> dict[str, Any]:
    """The run's numbers (test metrics of ``model``), written to ``RUN/ablation.json``."""
    if not runtime.is_main:
        return {}
    record = {
        "variant": run_dir.parent.name,
        "seed": run.train.seed,
        "family": "transformer" if isinstance(run.model, TransformerConfig) else "gateloop",
        "parameters": model.num_parameters(),
        "non_embedding_parameters": count_non_embedding(model),
        "d_channel_mixing": run.model.d_channel_mixing,
        "n_head": getattr(run.model, "n_head", None),
        "steps": steps,
        "wall_time_s": wall_time_s,
        "metrics": task.evaluate(model, run, shared),
    }
    atomic_write_text(run_dir / RECORD_NAME, json.dumps(record, indent=2) + "\n")
    return record


def read_record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RECORD_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def _record_from_final(
    task: AblationTask, run: RunConfig, run_dir: Path, shared: Any, runtime: Runtime
) -> dict[str, Any]:
    """A finished run without a record (killed after ``final/``): evaluate its final weights."""
    model = model_class(run.model).from_pretrained(run_dir / "final", device=runtime.device)
    steps = int(read_run_config(run_dir)["resolved"]["max_steps"])
    wall_path = run_dir / WALL_TIME_NAME
    wall = json.loads(wall_path.read_text())["seconds"] if wall_path.is_file() else None
    return write_record(task, run, run_dir, model, steps, wall, shared, runtime)
