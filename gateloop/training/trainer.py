"""The training loop every experiment shares: AdamW + warm-up/cosine, clipping, accumulation,
tqdm progress, JSONL/CSV metrics, safetensors checkpoints and exact resume.

The data order is a pure function of (seed, step): a resumed run draws the same batches an
uninterrupted one would, and the checkpoint restores optimizer, scheduler and RNG state, so the
weights after a resume are identical to those of a run that was never killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gateloop.models.base import CausalModel
from gateloop.training.checkpoint import checkpoint_dirs, load_checkpoint, save_checkpoint
from gateloop.training.metrics import MetricsLogger
from gateloop.training.optim import build_optimizer, build_scheduler

Batch = Any
LossFn = Callable[[CausalModel, Batch], tuple[Tensor, dict[str, float]]]
BatchFn = Callable[[int, int], Batch]  # (step, micro-batch index) -> batch
EvalFn = Callable[[CausalModel], dict[str, float]]


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings of one run."""

    max_steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine decays to this fraction of the peak lr
    grad_clip: float | None = 1.0  # max global grad norm; None disables clipping
    grad_accum: int = 1  # micro-batches per optimizer step
    transition_lr: float | None = None  # lr of the state-transition projections (None: lr)
    transition_weight_decay: bool = False  # paper Table 4: no decay on transition projections
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate only at the end
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    progress: bool = True  # tqdm bar
    autocast: str = "none"  # "bf16": bfloat16 autocast of the forward (the recurrence stays float32)
    compile: bool = False  # torch.compile the forward module

    def validate(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.autocast not in ("none", "bf16"):
            raise ValueError(f"autocast must be 'none' or 'bf16', got {self.autocast!r}")


# fields that may change between a run and its resumption without changing its results
_RESUMABLE_CHANGES = {
    "progress",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "eval_every",
    "max_steps",
}


def _config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if key in _RESUMABLE_CHANGES:
                continue
            out += _config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        old, new = list(old), list(new)
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside ``torch.distributed``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class Trainer:
    """Runs ``loss_fn(model, next_batch(step, micro))`` for ``config.max_steps`` optimizer steps.

    Metrics go to ``run_dir/metrics.jsonl`` and ``metrics.csv``; checkpoints to
    ``run_dir/checkpoints``; the final model to ``run_dir/final`` (``save_pretrained`` layout).
    """

    def __init__(
        self,
        model: CausalModel,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        next_batch: BatchFn,
        loss_fn: LossFn,
        evaluate: EvalFn | None = None,
        tokens_per_batch: int | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        config.validate()
        self.model = model
        self.config = config
        self.run_dir = Path(run_dir)
        self.next_batch = next_batch
        self.loss_fn = loss_fn
        self.evaluate = evaluate
        self.tokens_per_batch = tokens_per_batch
        self.run_config = run_config or {}
        self.optimizer = build_optimizer(
            model,
            lr=config.lr,
            weight_decay=config.weight_decay,
            betas=config.betas,
            transition_lr=config.transition_lr,
            transition_weight_decay=config.transition_weight_decay,
        )
        self.scheduler = build_scheduler(
            self.optimizer,
            warmup_steps=config.warmup_steps,
            total_steps=config.max_steps,
            min_lr_ratio=config.min_lr_ratio,
        )
        self.metrics = MetricsLogger(self.run_dir)
        self.step = 0
        rank, self.world_size = rank_and_world()
        self.is_main = rank == 0
        # parallelism and compilation wrap the model from outside; checkpoints save the bare model
        forward: torch.nn.Module = model
        if self.world_size > 1:
            forward = torch.nn.parallel.DistributedDataParallel(model)
        if config.compile:
            forward = torch.compile(forward)  # type: ignore[assignment]
        self.forward_module = forward

    def _run_config(self) -> dict[str, Any]:
        return {
            "train": dataclasses.asdict(self.config),
            "model": self.model.config.to_dict(),
            **json.loads(json.dumps(self.run_config)),
        }

    def _start(self, resume: bool) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        existing = checkpoint_dirs(self.run_dir)
        saved = self.run_dir / "config.json"
        if resume and existing and saved.is_file():
            changes = _config_differences(
                json.loads(saved.read_text()), json.loads(json.dumps(self._run_config()))
            )
            if changes:
                raise ValueError(
                    f"--resume with a different config than {saved}: "
                    + "; ".join(changes[:8])
                    + " (start a new run directory, or resume with the original settings)"
                )
        if resume and existing:
            state = load_checkpoint(
                existing[-1], model=self.model, optimizer=self.optimizer, scheduler=self.scheduler
            )
            self.step = int(state["step"])
            if self.is_main:
                self.metrics.truncate_after(self.step)  # rows a killed run wrote after its checkpoint
            return
        if existing:
            raise FileExistsError(
                f"{self.run_dir} already holds checkpoints (latest {existing[-1].name}); pass resume=True "
                "(--resume) to continue it, or choose another run directory"
            )
        torch.manual_seed(self.config.seed)
        if self.is_main:
            for name in ("metrics.jsonl", "metrics.csv"):
                (self.run_dir / name).unlink(missing_ok=True)
            saved.write_text(json.dumps(self._run_config(), indent=2) + "\n")

    def _barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def _checkpoint(self) -> None:
        if self.is_main:
            save_checkpoint(
                self.run_dir,
                step=self.step,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                keep=self.config.keep_checkpoints,
            )
        self._barrier()  # no rank runs ahead of a checkpoint it might need to resume from

    def _micro_step(self, micro: int) -> tuple[float, dict[str, float]]:
        """Forward and backward of one micro-batch; DDP syncs gradients on the last one only."""
        cfg = self.config
        last = micro == cfg.grad_accum - 1
        sync = contextlib.nullcontext()
        if self.world_size > 1 and not last:
            sync = self.forward_module.no_sync()  # type: ignore[operator]
        device_type = next(self.model.parameters()).device.type
        autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.autocast == "bf16")
        with sync:
            with autocast:
                loss, extras = self.loss_fn(self.forward_module, self.next_batch(self.step, micro))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {self.step}; stopping")
            (loss / cfg.grad_accum).backward()
        return loss.item() / cfg.grad_accum, extras

    def _mean_over_ranks(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return float(t) / self.world_size

    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        """Train to ``max_steps`` (continuing the latest checkpoint when ``resume``); returns the
        last logged training metrics merged with the final evaluation."""
        from tqdm.auto import tqdm

        self._start(resume)
        cfg = self.config
        show = cfg.progress and self.is_main
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not show, dynamic_ncols=True)
        window_start, window_tokens = time.perf_counter(), 0
        last: dict[str, Any] = {}
        trained = self.step < cfg.max_steps  # False when resuming a finished run
        while self.step < cfg.max_steps:
            self.model.train()
            total, extras = 0.0, {}
            for micro in range(cfg.grad_accum):
                part, extras = self._micro_step(micro)
                total += part
            grad_norm = None
            if cfg.grad_clip is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            window_tokens += (self.tokens_per_batch or 0) * cfg.grad_accum * self.world_size
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                total = self._mean_over_ranks(total)  # the global batch's loss
                elapsed = time.perf_counter() - window_start
                last = {
                    "step": self.step,
                    "loss": total,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    **(
                        {"grad_norm": grad_norm} if grad_norm is not None and math.isfinite(grad_norm) else {}
                    ),
                    **({"tokens_per_s": window_tokens / elapsed} if self.tokens_per_batch else {}),
                    **extras,
                }
                if self.is_main:
                    self.metrics.log(last)
                postfix = {"loss": f"{total:.4f}", "lr": f"{last['lr']:.2e}"}
                if self.tokens_per_batch:
                    postfix["tok/s"] = f"{last['tokens_per_s']:.0f}"
                bar.set_postfix(postfix)
                window_start, window_tokens = time.perf_counter(), 0
            if self.evaluate is not None and cfg.eval_every and self.step % cfg.eval_every == 0:
                if self.is_main:
                    self.metrics.log({"step": self.step, **self._evaluate()})
                self._barrier()
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                self._checkpoint()
        bar.close()
        result = dict(last)
        if self.evaluate is not None and self.is_main:
            final_eval = self._evaluate()
            logged_in_loop = cfg.eval_every and cfg.max_steps % cfg.eval_every == 0
            if trained and not logged_in_loop:
                self.metrics.log({"step": self.step, **final_eval})
            result.update(final_eval)
        if self.is_main:
            self.model.save_pretrained(self.run_dir / "final")
        self._barrier()
        return result

    def _evaluate(self) -> dict[str, float]:
        assert self.evaluate is not None
        self.model.eval()
        with torch.no_grad():
            return self.evaluate(self.model)
