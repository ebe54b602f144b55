"""``TrainConfig``: the optimisation and bookkeeping settings every task shares, and ``Schedule``,
its derived step counts (steps from epochs, warm-up from a fraction, evaluation from epochs),
resolved in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from gateloop._validation import check_choice, check_positive_int
from gateloop.config_utils import check_field_types, dataclass_from_dict, to_dict
from gateloop.training.trackers import parse_trackers

AUTOCAST = ("none", "bf16")
PARALLEL = ("ddp", "fsdp")
# "auto": sharded when the model is (FSDP over several ranks), full otherwise
CheckpointFormat = Literal["auto", "full", "sharded"]
CHECKPOINT_FORMATS: tuple[str, ...] = get_args(CheckpointFormat)


@dataclass
class TrainConfig:
    """How one run trains. Lengths may be given in steps or in epochs: a step count, when set,
    wins over its epoch (or fraction) form; ``resolve`` turns them into a ``Schedule``."""

    # length: max_steps if set, else epochs over the training data
    max_steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32  # per process; the global batch is batch_size x processes x grad_accum
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3
    # lr of the state-transition projections (None: lr); paper Table 4 gives them their own
    transition_lr: float | None = None
    weight_decay: float = 0.0
    transition_weight_decay: bool = False  # paper Table 4: no decay on transition projections
    betas: tuple[float, float] = (0.9, 0.98)
    # linear warm-up: warmup_steps if set, else warmup_fraction of the run
    warmup_steps: int | None = None
    warmup_fraction: float | None = None
    min_lr_ratio: float = 0.0  # cosine decays to this fraction of the peak lr
    grad_clip: float | None = 1.0  # max global grad norm; None disables clipping
    log_every: int = 10
    # periodic evaluation: eval_every steps if set, else every eval_every_epochs; neither: at the end only
    eval_every: int | None = None
    eval_every_epochs: float | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0  # model init and data order
    autocast: str = "none"  # "bf16": bfloat16 autocast of the forward (the recurrence stays float32)
    compile: bool = False  # torch.compile the forward module
    # recompute each block's activations in the backward: less memory, ~one more forward of compute
    activation_checkpointing: bool = False
    # data parallelism over torchrun's processes: "ddp" (whole model per rank) or "fsdp" (FSDP2:
    # parameters, gradients and optimizer state sharded per block)
    parallel: str = "ddp"
    cpu_offload: bool = False  # FSDP: keep the shards and the optimizer step on the CPU
    # checkpoints: "full" (one model.safetensors, gathered), "sharded" (torch.distributed.checkpoint:
    # each rank writes its own shards; FSDP only), "auto" (sharded under FSDP over several ranks)
    checkpoint_format: CheckpointFormat = "auto"
    # ranks that split each sequence between them (exact state passing, ops/context_parallel.py);
    # data parallelism runs over the groups they form
    context_parallel: int = 1
    log_to: str = ""  # trackers beside metrics.jsonl/.csv, comma-separated: "tensorboard", "wandb"

    def validate(self) -> None:
        check_field_types(self)
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set max_steps or epochs (the run's length)")
        for name in ("batch_size", "grad_accum", "log_every", "checkpoint_every", "context_parallel"):
            check_positive_int(name, getattr(self, name))
        for name in ("max_steps", "eval_every"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.warmup_steps is not None and self.warmup_steps != 0:
            check_positive_int("warmup_steps", self.warmup_steps)  # 0: no warm-up
        for name in ("epochs", "eval_every_epochs", "lr", "transition_lr"):
            value = getattr(self, name)
            # why finite: an lr of inf (or NaN) passes "> 0" and fails only at the first step
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(
                f"min_lr_ratio must be in [0, 1] (the fraction of the peak lr the cosine ends at), "
                f"got {self.min_lr_ratio!r}"
            )
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction <= 1:
            raise ValueError(f"warmup_fraction must be in [0, 1], got {self.warmup_fraction!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        check_choice("autocast", self.autocast, AUTOCAST)
        check_choice("parallel", self.parallel, PARALLEL)
        if self.cpu_offload and self.parallel != "fsdp":
            raise ValueError(f"cpu_offload needs parallel 'fsdp', got parallel {self.parallel!r}")
        check_choice("checkpoint_format", self.checkpoint_format, CHECKPOINT_FORMATS)
        if self.checkpoint_format == "sharded" and self.parallel != "fsdp":
            raise ValueError(
                f"checkpoint_format 'sharded' needs parallel 'fsdp' (a DDP rank holds the whole model), "
                f"got parallel {self.parallel!r}"
            )
        parse_trackers(self.log_to)

    def resolve(self, steps_per_epoch: float) -> Schedule:
        """The step counts of this run, given how many optimizer steps make one epoch."""
        if not steps_per_epoch > 0:
            raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}")
        max_steps = self.max_steps or max(1, int(self.epochs * steps_per_epoch))  # type: ignore[operator]
        if self.warmup_steps is not None:
            warmup = self.warmup_steps
        else:
            warmup = int((self.warmup_fraction or 0.0) * max_steps)
        eval_every = self.eval_every
        if eval_every is None and self.eval_every_epochs is not None:
            eval_every = max(1, int(self.eval_every_epochs * steps_per_epoch))
        return Schedule(
            max_steps=max_steps,
            warmup_steps=min(warmup, max_steps),
            eval_every=eval_every or 0,
            steps_per_epoch=steps_per_epoch,
        )

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return dataclass_from_dict(cls, data)


@dataclass(frozen=True)
class Schedule:
    """Step counts derived from a ``TrainConfig`` and the data (``TrainConfig.resolve``)."""

    max_steps: int
    warmup_steps: int
    eval_every: int  # 0: evaluate at the end only
    steps_per_epoch: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_steps": self.max_steps,
            "warmup_steps": self.warmup_steps,
            "eval_every": self.eval_every,
            "steps_per_epoch": self.steps_per_epoch,
        }
