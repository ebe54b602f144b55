"""The two tasks of the ablation grid as data: presets, default variants and seeds, the metrics
(headline first), and how one run of each is trained and tested (Memory Horizon: test accuracy;
language modelling: test perplexity)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateloop.data.prepare import TokenDataset
from gateloop.experiments import language_model as lm
from gateloop.experiments import memory_horizon as mh
from gateloop.experiments.ablation_variants import VARIANTS
from gateloop.experiments.run_config import RunConfig
from gateloop.models.base import CausalModel
from gateloop.training import TrainResult


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


# ---------------------------------------------------------------------------- the two tasks
def _mh_train(run: Any, run_dir: Path, *, shared: Any, **kwargs: Any) -> TrainResult:
    return mh.train(run, run_dir, data=shared, **kwargs)


def _mh_evaluate(model: CausalModel, run: Any, shared: Any) -> dict[str, float]:
    result = mh.evaluate(model, shared["x_test"], shared["y_test"], run.data.reset_id)
    return {k: result[k] for k in ("test_accuracy", "test_accuracy_excluding_resets", "test_loss")}


def _lm_load(run: Any) -> Any:
    if not run.data.path:
        raise ValueError("--task lm needs --data DIR (a dataset written by `gateloop data prepare`)")
    return TokenDataset(run.data.path)


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
    ),
}


def get_task(name: str) -> AblationTask:
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {name!r}")
    return TASKS[name]
