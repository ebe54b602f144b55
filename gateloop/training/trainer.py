"""The training loop every task shares: a ``train_step`` and small components that each decide
whether to act at a step (``TrainLog.should_log``, ``Evaluator.should_evaluate``,
``Checkpointer.should_save``) plus the run directory's resumption rules (``start_run_dir``).

The data order is a pure function of (seed, step): a resumed run draws the same batches an
uninterrupted one would, and the checkpoint restores optimizer, scheduler and RNG state, so the
weights after a resume are identical to those of a run that was never killed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gateloop.models.base import CausalModel
from gateloop.training.checkpoint import Checkpointer, save_final
from gateloop.training.config import Schedule, TrainConfig
from gateloop.training.distributed import (
    Runtime,
    barrier,
    current_runtime,
    flush_denormal,
    mean_over_ranks,
)
from gateloop.training.evaluation import EvalFn, Evaluator, scalars, write_eval
from gateloop.training.metrics import MetricsLogger, TrainLog
from gateloop.training.optim import build_optimizer, build_scheduler
from gateloop.training.parallel import (
    full_state_dict,
    gradient_sync,
    is_sharded,
    local_value,
    wrap_for_training,
)
from gateloop.training.run_dir import RunLock, start_run_dir
from gateloop.training.step_metrics import GradNormWindow, NonFiniteLoss
from gateloop.training.trackers import open_trackers, parse_trackers
from gateloop.training.wall_time import counted_wall_time

Batch = Any
# extras: scalars to log beside the loss, floats or 0-d tensors (read on log steps only)
LossFn = Callable[[nn.Module, Batch], tuple[Tensor, dict[str, float | Tensor]]]
BatchFn = Callable[[int, int], Batch]  # (step, micro-batch index) -> this process's batch


@dataclass
class TrainResult:
    """What ``Trainer.train`` hands back: the trained model (never reloaded from disk), the step
    reached, the last logged training metrics and the final evaluation (structured)."""

    model: CausalModel
    steps: int
    train_metrics: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float | None = None  # over every session of the run (None: unknown, see wall_time)

    def summary(self) -> dict[str, Any]:
        """One flat dict of scalars: steps, parameters, last training metrics, final evaluation."""
        return {
            "steps": self.steps,
            "parameters": self.model.num_parameters(),
            **self.train_metrics,
            **scalars(self.evaluation),
        }


class Trainer:
    """Runs ``loss_fn(model, next_batch(step, micro))`` for ``schedule.max_steps`` optimizer steps.

    Metrics go to ``run_dir/metrics.jsonl`` and ``metrics.csv``; checkpoints to
    ``run_dir/checkpoints``; the final model to ``run_dir/final`` (``save_pretrained`` layout);
    ``run_config`` (a JSON-ready dict) to ``run_dir/config.json``.
    """

    def __init__(
        self,
        model: CausalModel,
        config: TrainConfig,
        schedule: Schedule,
        run_dir: str | Path,
        *,
        next_batch: BatchFn,
        loss_fn: LossFn,
        evaluate: EvalFn | None = None,
        tokens_per_batch: int | None = None,
        run_config: dict[str, Any] | None = None,
        runtime: Runtime | None = None,
        progress: bool = True,
        labels: dict[str, Any] | None = None,
    ) -> None:
        config.validate()
        self.model = model
        self.config = config
        self.schedule = schedule
        self.run_dir = Path(run_dir)
        self.next_batch = next_batch
        self.loss_fn = loss_fn
        self.run_config = run_config or {}
        self.labels = labels or {}  # what eval.json says the run is beside its numbers ({"variant": ...})
        self.runtime = runtime or current_runtime(next(model.parameters()).device)
        if self.runtime.cp_size != config.context_parallel:
            raise ValueError(
                f"train.context_parallel is {config.context_parallel} but the runtime splits sequences "
                f"over {self.runtime.cp_size} ranks: build the batches and the Trainer from "
                "distributed.with_context_parallel(runtime, config.context_parallel)"
            )
        # sharding (FSDP) replaces the parameters: the optimizer is built over what it leaves
        self.forward_module = wrap_for_training(
            model,
            self.runtime,
            parallel=config.parallel,
            activation_checkpointing=config.activation_checkpointing,
            compile=config.compile,
            bf16=config.autocast == "bf16",
            cpu_offload=config.cpu_offload,
        )
        self.sharded = is_sharded(model)
        self.optimizer, self.scheduler = _optimization(model, config, schedule)
        self.metrics = MetricsLogger(self.run_dir)
        self.log = TrainLog(
            self.metrics,
            every=config.log_every,
            runtime=self.runtime,
            # tokens_per_batch: one rank's rows, whole sequences (context parallelism splits them)
            tokens_per_step=(tokens_per_batch or 0) * config.grad_accum * self.runtime.dp_size,
            progress=progress,
        )
        self.evaluator = Evaluator(evaluate, schedule.eval_every) if evaluate is not None else None
        self.checkpointer = Checkpointer(
            self.run_dir,
            every=config.checkpoint_every,
            keep=config.keep_checkpoints,
            runtime=self.runtime,
            format=config.checkpoint_format,
        )
        self.step = 0
        self.grad_norms = GradNormWindow(config.grad_clip)
        self.finite = NonFiniteLoss()

    # ------------------------------------------------------------------ one step
    def _micro_step(self, micro: int) -> tuple[Tensor, dict[str, float | Tensor]]:
        """Forward and backward of one micro-batch; gradients are reduced across ranks on the
        last one only.
        Returns the micro-batch's share of the step's loss as a detached tensor: reading it (a
        host sync on a GPU) waits for the log step."""
        cfg = self.config
        sync = gradient_sync(self.forward_module, self.runtime, micro == cfg.grad_accum - 1)
        autocast = torch.autocast(
            self.runtime.device.type, dtype=torch.bfloat16, enabled=cfg.autocast == "bf16"
        )
        with sync:
            with autocast:
                loss, extras = self.loss_fn(self.forward_module, self.next_batch(self.step, micro))
            self.finite.record(loss, self.step)
            (loss / cfg.grad_accum).backward()
        return loss.detach() / cfg.grad_accum, extras

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over ``grad_accum`` micro-batches; the step's loss (this process),
        gradient norm (both tensors: nothing here waits for the device) and the loss function's
        extras."""
        self.model.train()
        total: Tensor | float = 0.0
        extras: dict[str, float | Tensor] = {}
        for micro in range(self.config.grad_accum):
            part, extras = self._micro_step(micro)
            total = total + part
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        if self.config.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.grad_clip)
        else:  # measured only: the metrics carry the norm of unclipped runs too
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        grad_norm = local_value(grad_norm)  # FSDP: a replicated DTensor
        self.grad_norms.add(grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"loss": total, "grad_norm": grad_norm, "extras": extras}

    # ------------------------------------------------------------------ the loop
    def _resume_or_start(self, resume: bool) -> None:
        # the thread count changes reductions in the last digits: recorded, and a change warned of
        resolved = {
            **self.run_config.get("resolved", {}),
            "threads": torch.get_num_threads(),
            "sharded": self.sharded,  # FSDP over several ranks (--train.parallel fsdp in one process: no)
        }
        run_config = {**self.run_config, "resolved": resolved}
        resuming = start_run_dir(self.run_dir, run_config, resume=resume, is_main=self.runtime.is_main)
        if resuming:
            self.step = self.checkpointer.restore(self.model, self.optimizer, self.scheduler)
            if "grad_norms" in self.checkpointer.restored:  # absent from checkpoints written before it
                self.grad_norms.load_state_dict(self.checkpointer.restored["grad_norms"])
            if self.runtime.is_main:
                self.metrics.truncate_after(self.step)  # rows a killed run wrote after its checkpoint
        else:
            torch.manual_seed(self.config.seed)

    def train(self, *, resume: bool = False) -> TrainResult:
        """Train to ``max_steps`` (continuing the latest checkpoint when ``resume``), evaluate,
        save ``final/``; returns the model and the final evaluation. Rank 0 holds the run
        directory's lock throughout: a second writer is refused. The session's wall time is added
        to ``RUN/wall_time.json`` (``TrainResult.wall_time_s``: the run's total over sessions).

        Subnormal floats are flushed to zero while it trains (``flush_denormal``) and the setting
        is restored after: nothing outside ``train`` changes."""
        started_empty = not self.run_dir.exists()  # before the lock creates the directory
        lock = RunLock(self.run_dir) if self.runtime.is_main else contextlib.nullcontext()
        with lock, flush_denormal(), counted_wall_time(self.run_dir, self.runtime, started_empty) as wall:
            result = self._train(resume)
        result.wall_time_s = wall.seconds
        return result

    def _train(self, resume: bool) -> TrainResult:
        self._resume_or_start(resume)
        if self.runtime.is_main:
            names = parse_trackers(self.config.log_to)
            self.metrics.trackers = open_trackers(names, self.run_dir, self.run_config, self.step)
        try:
            return self._loop()
        finally:
            for tracker in self.metrics.trackers:
                tracker.close()
            self.metrics.trackers = []

    def _loop(self) -> TrainResult:
        max_steps = self.schedule.max_steps
        self.log.open(initial=self.step, total=max_steps)
        while self.step < max_steps:
            start = time.perf_counter()
            out = self.train_step()
            self.log.step_done(time.perf_counter() - start)
            logging = self.log.should_log(self.step, max_steps)
            saving = self.checkpointer.should_save(self.step, max_steps)
            if logging or saving:
                self.finite.check()  # the one host sync of a step that logs or saves
            if logging:
                loss = mean_over_ranks(float(out["loss"]), self.runtime)  # the global batch's loss
                values = {"loss": loss, "lr": self.optimizer.param_groups[0]["lr"]}
                self.log.write(self.step, {**values, **self.grad_norms.pop(out["grad_norm"])}, out["extras"])
            if self.evaluator is not None and self.evaluator.should_evaluate(self.step):
                self._evaluate_and_log()
            if saving:
                self.checkpointer.save(
                    self.step,
                    self.model,
                    self.optimizer,
                    self.scheduler,
                    extra={"grad_norms": self.grad_norms.state_dict()},
                )
        self.log.close()
        evaluation = self._final_evaluation()
        weights = full_state_dict(self.model) if self.sharded else None  # a collective
        if self.runtime.is_main:
            save_final(self.run_dir, self.model, weights=weights)
            if self.evaluator is not None:
                write_eval(self.run_dir, evaluation, steps=self.step, weights="final", labels=self.labels)
        barrier(self.runtime)
        # only rank 0 holds gathered weights ({} elsewhere): a plain model for plots and sampling;
        # the other ranks return their shards (nothing after training runs on them)
        model = _unsharded_copy(self.model, weights) if weights else self.model
        return TrainResult(model, self.step, dict(self.log.last), evaluation)

    def _evaluate_and_log(self) -> None:
        """Rank 0 evaluates and logs the scalars (the evaluator keeps the result); the others wait,
        or, when the model is sharded (its forward is a collective), evaluate alongside."""
        assert self.evaluator is not None
        if self.runtime.is_main or self.sharded:
            result = self.evaluator.evaluate(self.model, self.step)
            if self.runtime.is_main:
                self.metrics.log({"step": self.step, **scalars(result)})
        barrier(self.runtime)

    def _final_evaluation(self) -> dict[str, Any]:
        """The evaluation at the last step: reused when the loop just made it; logged unless the
        metrics already hold it (a resumed finished run evaluates once more and logs nothing new)."""
        if self.evaluator is None or not (self.runtime.is_main or self.sharded):
            return {}
        result = self.evaluator.evaluate(self.model, self.step)
        if not self.runtime.is_main:
            return {}
        keys = set(scalars(result))
        logged = any(r.get("step") == self.step and keys <= set(r) for r in self.metrics.read())
        if not logged:
            self.metrics.log({"step": self.step, **scalars(result)})
        return result


def _optimization(
    model: CausalModel, config: TrainConfig, schedule: Schedule
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with the transition parameters' own group, and its warm-up + cosine schedule."""
    optimizer = build_optimizer(
        model,
        lr=config.lr,
        weight_decay=config.weight_decay,
        betas=config.betas,
        transition_lr=config.transition_lr,
        transition_weight_decay=config.transition_weight_decay,
    )
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=schedule.warmup_steps,
        total_steps=schedule.max_steps,
        min_lr_ratio=config.min_lr_ratio,
    )
    return optimizer, scheduler


def _unsharded_copy(model: CausalModel, weights: dict[str, Tensor]) -> CausalModel:
    """A plain (unsharded) model of ``model``'s class and config holding ``weights``: what a
    sharded run returns, usable by one process alone (plots, sampling)."""
    copy = type(model)(model.config)
    copy.load_state_dict(weights)
    return copy.eval()
