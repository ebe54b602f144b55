"""Shared training code: configs, device/distributed setup, optimizer groups, schedule, metrics,
checkpoints, resumption and the trainer loop."""

from gateloop.training.checkpoint import (
    Checkpointer,
    checkpoint_dirs,
    load_checkpoint,
    save_checkpoint,
    trained_model_dir,
)
from gateloop.training.config import Schedule, TrainConfig
from gateloop.training.distributed import Runtime, configure_cpu, current_runtime, setup_run
from gateloop.training.evaluation import Evaluator
from gateloop.training.metrics import MetricsLogger, TrainLog
from gateloop.training.optim import build_optimizer, build_scheduler, parameter_groups
from gateloop.training.run_dir import OldRunFormatError, read_run_config
from gateloop.training.trainer import Trainer, TrainResult

__all__ = [
    "Checkpointer",
    "Evaluator",
    "MetricsLogger",
    "OldRunFormatError",
    "Runtime",
    "Schedule",
    "TrainConfig",
    "TrainLog",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "checkpoint_dirs",
    "configure_cpu",
    "current_runtime",
    "load_checkpoint",
    "parameter_groups",
    "read_run_config",
    "save_checkpoint",
    "setup_run",
    "trained_model_dir",
]
