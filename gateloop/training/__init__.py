"""Shared training code: optimizer groups, schedule, metrics, checkpoints and the trainer loop."""

from gateloop.training.checkpoint import checkpoint_dirs, load_checkpoint, save_checkpoint, trained_model_dir
from gateloop.training.metrics import MetricsLogger
from gateloop.training.optim import build_optimizer, build_scheduler, parameter_groups
from gateloop.training.trainer import TrainConfig, Trainer, rank_and_world

__all__ = [
    "MetricsLogger",
    "TrainConfig",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "checkpoint_dirs",
    "load_checkpoint",
    "parameter_groups",
    "rank_and_world",
    "save_checkpoint",
    "trained_model_dir",
]
