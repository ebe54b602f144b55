"""The tasks, one table: everything a command needs to know of a task, as data.

``gateloop train TASK``, ``gateloop experiment ablations --task TASK`` and the ablation grid look a
task up in ``TASKS``: its run config class and presets, how the command line picks its model
(``--variant`` for Memory Horizon, ``--model`` for language modelling), the data every run of it
shares, how one run trains, and which test metrics the grid reports (headline first).

Adding a task touches one new module and one entry here. For a synthetic recall task::

    # gateloop/experiments/recall.py: RecallData, RecallRun(RunConfig) with task = "recall",
    # PRESETS, load_data(data), train(run, run_dir, *, data, resume, progress, runtime) and
    # evaluate(model, x, y) -> {"test_accuracy": ...}, as memory_horizon.py has them

    TASKS = _table(
        ...,
        Task(
            name="recall", run_class=recall.RecallRun, presets=recall.PRESETS, train_preset="cpu",
            description="train a tagger on associative recall", model_flag=recall.VARIANT_FLAG,
            head_dim=16, variants=("gateloop", "transformer"), seeds=(0, 1, 2),
            metrics=(Metric("test_accuracy", "test accuracy", True),), eval_key="test_accuracy",
            load=lambda run: recall.load_data(run.data), train=_recall_train, evaluate=_recall_evaluate,
        ),
    )

and ``gateloop train recall --help`` exists, with a flag for every field of ``RecallRun``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateloop.data.tokens import TokenDataset
from gateloop.experiments import language_model as lm
from gateloop.experiments import memory_horizon as mh
from gateloop.experiments.run_config import RunConfig
from gateloop.experiments.variants import VARIANTS
from gateloop.models.base import CausalModel
from gateloop.training import TrainResult


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool
    digits: int = 3


@dataclass(frozen=True)
class ModelFlag:
    """How ``gateloop train TASK`` picks the model: ``--NAME CHOICE`` applied by ``select``
    (``select(run, None)`` for a run given by ``--config``: its model as saved)."""

    name: str  # the flag, without dashes: "variant", "model"
    choices: tuple[str, ...]
    default: str | None  # the choice when the flag is not given (None: the preset's model)
    help: str
    select: Callable[[RunConfig, str | None, dict[str, Any]], RunConfig]  # (base, choice, overrides)
    label: Callable[[RunConfig], str]  # what a run is called (its directory name, its eval.json)


@dataclass(frozen=True)
class Task:
    """What the commands and the grid need of a task (see the module docstring)."""

    name: str
    run_class: type[RunConfig]
    presets: Mapping[str, RunConfig]
    train_preset: str  # ``gateloop train TASK``'s default preset
    description: str  # ``gateloop train TASK --help``
    model_flag: ModelFlag
    head_dim: int  # head size of the multi-head variants and the Transformer
    variants: tuple[str, ...]  # the grid's default variants
    seeds: tuple[int, ...]  # the grid's default seeds
    metrics: tuple[Metric, ...]  # the headline metric first
    eval_key: str  # a key of the trainer's final evaluation row
    load: Callable[[RunConfig], Any]  # data every run of the task shares
    train: Callable[..., TrainResult]  # (run, run_dir, resume=, progress=, runtime=, shared=)
    evaluate: Callable[[CausalModel, RunConfig, Any], dict[str, float]]  # test metrics of a model
    # the test metrics when the trainer's final evaluation already holds them (None: evaluate)
    final_metrics: Callable[[dict[str, Any]], dict[str, float] | None] = lambda evaluation: None
    flag_aliases: Mapping[str, list[str]] = field(default_factory=dict)  # {"data.path": ["--data"]}


# ---------------------------------------------------------------------------- Memory Horizon
def _mh_select(base: RunConfig, variant: str | None, overrides: dict[str, Any]) -> RunConfig:
    return mh.with_variant(base, variant).with_overrides(overrides)  # type: ignore[arg-type]


def _mh_train(run: Any, run_dir: Path, *, shared: Any, **kwargs: Any) -> TrainResult:
    return mh.train(run, run_dir, data=shared, **kwargs)


MH_METRICS = ("test_accuracy", "test_accuracy_excluding_resets", "test_loss")


def _mh_evaluate(model: CausalModel, run: Any, shared: Any) -> dict[str, float]:
    result = mh.evaluate(model, shared["x_test"], shared["y_test"], run.data.reset_id)
    return {k: result[k] for k in MH_METRICS}


def _mh_final_metrics(evaluation: dict[str, Any]) -> dict[str, float] | None:
    """The trainer evaluates on the test set: its final evaluation is the record's metrics."""
    return {k: evaluation[k] for k in MH_METRICS} if all(k in evaluation for k in MH_METRICS) else None


# ---------------------------------------------------------------------------- language modelling
def _lm_select(base: RunConfig, model: str | None, overrides: dict[str, Any]) -> RunConfig:
    return lm.build_run(base, model, overrides)  # type: ignore[arg-type]


def _lm_load(run: Any) -> Any:
    if not run.data.path:
        raise ValueError("--data is required: a dataset directory written by `gateloop data prepare`")
    return TokenDataset(run.data.path)


def _lm_train(run: Any, run_dir: Path, *, shared: Any, **kwargs: Any) -> TrainResult:
    return lm.train(run, run_dir, dataset=shared, **kwargs)


def _lm_evaluate(model: CausalModel, run: Any, shared: Any) -> dict[str, float]:
    seq_len = run.data.seq_len
    test = lm.evaluate_perplexity(model, shared["test"], seq_len=seq_len)
    val = lm.evaluate_perplexity(model, shared["val"], seq_len=seq_len, max_tokens=run.data.eval_tokens)
    return {
        "test_perplexity": test["perplexity"],
        "test_nll": test["nll"],
        "val_perplexity": val["perplexity"],
    }


# ---------------------------------------------------------------------------- the table
def _table(*tasks: Task) -> dict[str, Task]:
    """``{name: task}``; each task's run config class must name the same task."""
    for task in tasks:
        if task.run_class.task != task.name:
            raise ValueError(f"task {task.name!r} has the run config of task {task.run_class.task!r}")
    return {task.name: task for task in tasks}


TASKS: dict[str, Task] = _table(
    Task(
        name="memory-horizon",
        run_class=mh.MemoryHorizonRun,
        presets=mh.PRESETS,
        train_preset="paper",
        description="Train one Memory Horizon variant. The paper preset is Tables 2-3 (L 1024, 300 "
        "epochs, batch 32, lr 2.5e-3, AdamW (0.9, 0.98), wd 0.05, cosine with 10 000 warm-up steps); "
        "the cpu preset is a shorter run that fits a 2-core machine; the diagnosis preset is L 256 with "
        "one reset for 5 000 steps (results/memory_horizon_diagnosis). Under `torchrun` it runs DDP.",
        model_flag=ModelFlag(
            "variant", tuple(mh.VARIANTS), None, "state transitions", _mh_select, lambda run: run.variant
        ),
        head_dim=mh.HEAD_DIM,
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
        final_metrics=_mh_final_metrics,
    ),
    Task(
        name="lm",
        run_class=lm.LMRun,
        presets=lm.PRESETS,
        train_preset="cpu",
        description="Train GateLoop, its fixed-transition variant or the Transformer baseline on a "
        "dataset from `gateloop data prepare`. The wikitext103_125m preset is paper Table 4 (batch 16, "
        "lr 1.25e-4, transition lr 1e-4 without weight decay, wd 0.25, AdamW (0.9, 0.98), cosine with "
        "5000 warm-up steps, 100 epochs; context 1024, which the paper does not state). Under "
        "`torchrun --nproc_per_node N -m gateloop train lm ...` it runs PyTorch DDP (NCCL on GPUs, gloo "
        "on CPU); --train.batch-size is per process.",
        model_flag=ModelFlag(
            "model", lm.MODELS, "gateloop", "which model", _lm_select, lambda run: run.model_name
        ),
        head_dim=lm.HEAD_DIM,
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
        flag_aliases={"data.path": ["--data"]},
    ),
)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {name!r}")
    return TASKS[name]
