"""Language modelling (paper §5.2, Tables 1 and 4) on prepared token shards: config, presets,
model variants, batches, loss, perplexity, training of one model and loading a trained run.

Models: ``gateloop`` (the paper's), ``gateloop-fixed`` (input-independent transitions) and
``transformer`` (the softmax baseline), all in one harness and trained by the shared trainer.
Batches are random windows of ``seq_len + 1`` tokens drawn as a pure function of
(seed, step, micro-batch), so resumption and multi-process runs see the same global batches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gateloop._validation import check_choice, check_positive_int
from gateloop.config_utils import check_field_types, dataclass_from_dict
from gateloop.data.tokens import TokenDataset, document_ids, window_batch
from gateloop.experiments.perplexity import evaluate_perplexity
from gateloop.experiments.run_config import RunConfig, field_names
from gateloop.experiments.variants import TASK_NAMES, task_name, variant_model
from gateloop.models import GateLoopConfig, ModelConfig, TransformerConfig
from gateloop.models.base import CausalModel
from gateloop.models.registry import build_model, model_class
from gateloop.training import (
    Runtime,
    Schedule,
    TrainConfig,
    Trainer,
    TrainResult,
    current_runtime,
    read_run_config,
    trained_model_dir,
)
from gateloop.training.distributed import sequence_slice, with_context_parallel

MODELS = tuple(TASK_NAMES["lm"])  # --model choices; TASK_NAMES["lm"] names their variants
HEAD_DIM = 64  # the Transformer's head size: 3 heads at d_model 192


@dataclass
class LMData:
    """Where the tokens are and how they are cut."""

    path: str = ""  # dataset directory written by `gateloop data prepare`
    seq_len: int = 1024  # context length: not stated in the paper; ours
    eval_tokens: int = 262_144  # validation tokens per periodic evaluation
    reset_at_documents: bool = False  # restart the GateLoop state at end-of-text inside a window

    def validate(self) -> None:
        check_field_types(self)
        check_positive_int("seq_len", self.seq_len)
        check_positive_int("eval_tokens", self.eval_tokens)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMData:
        return dataclass_from_dict(cls, data)


@dataclass
class LMRun(RunConfig):
    """One LM run. Defaults are the paper's Table 4 (= the ``wikitext103_125m`` preset)."""

    task: ClassVar[str] = "lm"

    model: GateLoopConfig | TransformerConfig = field(default_factory=GateLoopConfig.wikitext103_125m)
    data: LMData = field(default_factory=LMData)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=100,
            batch_size=16,
            lr=1.25e-4,
            transition_lr=1e-4,  # Table 4: state-transition projections, no weight decay
            weight_decay=0.25,
            betas=(0.9, 0.98),
            warmup_steps=5000,
            grad_clip=1.0,  # not stated in the paper: ours
            log_every=10,
            eval_every=1000,
            checkpoint_every=1000,
        )
    )

    @property
    def model_name(self) -> str:
        return task_name(self.task, self.model)

    def to_saved_dict(self) -> dict[str, Any]:
        """The dataset path made absolute, so a run resumed from another directory compares equal."""
        saved = self.to_dict()
        return {**saved, "data": {**saved["data"], "path": str(Path(self.data.path).resolve())}}

    def tokens_per_step(self, world_size: int) -> int:
        return self.train.batch_size * self.train.grad_accum * world_size * self.data.seq_len

    def resolve(self, dataset: TokenDataset, world_size: int = 1) -> tuple[ModelConfig, Schedule]:
        """The model config with the dataset's vocabulary, and the step counts."""
        for split in ("train", "val"):
            if len(dataset[split]) < self.data.seq_len + 1:
                raise ValueError(
                    f"seq_len {self.data.seq_len} is beyond the data: split {split!r} of "
                    f"{dataset.directory} has only {len(dataset[split])} tokens"
                )
        model = type(self.model).from_dict({**self.model.to_dict(), "vocab_size": dataset.vocab_size})
        steps_per_epoch = len(dataset["train"]) / self.tokens_per_step(world_size)
        return model, self.train.resolve(steps_per_epoch)


def as_model(run: LMRun, name: str, *, match_parameters: bool = False) -> LMRun:
    """``run`` (a GateLoop run) for model ``name``; with ``match_parameters`` the parameter count
    is matched to GateLoop's by the FFN width (``parameter_matching.match_parameters``).

    The Transformer (no α, β projections) and the fixed variant (one α, β per channel instead) have
    fewer time-mixing weights than GateLoop; ``match_parameters`` widens their FFN until the
    non-embedding count, measured on the meta device, is GateLoop's (within its tolerance).
    """
    from gateloop.experiments.parameter_matching import match_parameters as matched

    check_choice("model", name, MODELS)
    if not isinstance(run.model, GateLoopConfig):
        raise ValueError(f"--model {name} needs a GateLoop run config to start from, got {run.model_name}")
    model: ModelConfig = variant_model(run.model, TASK_NAMES["lm"][name], HEAD_DIM)
    if match_parameters:
        model = matched(model, run.model)
    model.validate()
    return dataclasses.replace(run, model=model)


def _gateloop_cpu_model() -> GateLoopConfig:
    # measured on 2 cores (torch 2.13): 3.35M parameters with a 8192-id BPE, 0.69 s a step
    return GateLoopConfig(
        d_model=192,
        n_layer=4,
        n_head=192,  # SISO heads, as in the paper's LM
        d_channel_mixing=576,  # 3 x d_model, as the paper's 624 -> 1872
        tie_embeddings=True,
    )


PRESETS: dict[str, LMRun] = {
    # paper Table 4
    "wikitext103_125m": LMRun(),
    # a few-M-parameter model for 2 CPU cores: 1000 steps (4.1M tokens), about 12 minutes a model
    "cpu": LMRun(
        model=_gateloop_cpu_model(),
        data=LMData(seq_len=256, eval_tokens=32_768),
        train=TrainConfig(
            max_steps=1000,
            batch_size=16,
            lr=2e-3,
            weight_decay=0.1,
            warmup_steps=100,
            min_lr_ratio=0.1,
            log_every=10,
            eval_every=250,
            checkpoint_every=250,
        ),
    ),
}


def preset(
    name: str,
    model: str = "gateloop",
    overrides: dict[str, Any] | None = None,
    *,
    match_parameters: bool = False,
) -> LMRun:
    """Preset ``name`` for ``model`` with dotted overrides (``{"model.d_model": 64, ...}``)."""
    check_choice("preset", name, PRESETS)
    return build_run(PRESETS[name], model, overrides or {}, match_parameters=match_parameters)


def build_run(
    base: LMRun, model: str | None, overrides: dict[str, Any], *, match_parameters: bool = False
) -> LMRun:
    """Overrides go on the GateLoop base first (so a Transformer's heads follow an overridden
    d_model), then the model is converted; fields of the converted model's own class (its
    ``n_head``, ``rope_base``, ...) are applied again, and fields it lacks are refused."""
    run = base.with_overrides(overrides, skip_missing=True)
    if model is None:
        return run.with_overrides(overrides)
    run = as_model(run, model, match_parameters=match_parameters)
    shared = field_names(ModelConfig)
    again = {k: v for k, v in overrides.items() if k.startswith("model.") and k[6:] not in shared}
    return run.with_overrides({**{k: v for k, v in overrides.items() if not k.startswith("model.")}, **again})


# ---------------------------------------------------------------------------- batches and loss


def make_batch_fn(run: LMRun, tokens: np.ndarray, runtime: Runtime, eot_id: int | None = None):
    """Batches as a pure function of (seed, step, micro): every process draws the same global batch
    of ``batch_size * dp_size`` windows and keeps its own rows (under context parallelism, its
    slice of their positions: inputs s..e-1 and their targets, tokens s..e).

    With ``eot_id`` (documents restart the state) a batch is (tokens, document ids of the inputs):
    the ids are the whole window's, sliced, so that every rank of a sequence numbers its documents
    alike and a document starting exactly at a slice boundary restarts the state there."""
    b, parts = run.train.batch_size, runtime.dp_size
    positions = sequence_slice(run.data.seq_len, runtime)

    def next_batch(step: int, micro: int) -> Tensor | tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(((run.train.seed * 1_000_003 + step) * 101 + micro) % 2**63)
        rows = window_batch(tokens, seq_len=run.data.seq_len, rows=b * parts, generator=g)
        mine = rows[runtime.dp_rank * b : (runtime.dp_rank + 1) * b]  # (b, seq_len + 1)
        sliced = mine[:, positions.start : positions.stop + 1].to(runtime.device)
        if eot_id is None:
            return sliced
        ids = document_ids(mine[:, :-1], eot_id)[:, positions]  # (b, L_r): the window's inputs' ids
        return sliced, ids.to(runtime.device)

    return next_batch


def make_loss_fn():
    def loss_fn(model: nn.Module, batch: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        tokens, ids = batch if isinstance(batch, tuple) else (batch, None)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        kwargs = {} if ids is None else {"document_ids": ids}
        logits = model(inputs, **kwargs)  # (B, L, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()), {}

    return loss_fn


# ---------------------------------------------------------------------------- one run
def train(
    run: LMRun,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    runtime: Runtime | None = None,
    dataset: TokenDataset | None = None,
) -> TrainResult:
    """Train one LM on the prepared dataset at ``run.data.path`` (one process, or one rank of a
    torchrun job); returns the trained model and its final validation metrics. ``dataset``: that
    dataset already opened by the caller (the task table's shared data), so its shards are
    checked once."""
    run.validate()
    runtime = with_context_parallel(runtime or current_runtime(), run.train.context_parallel)
    if dataset is None:
        dataset = TokenDataset(run.data.path)
    model_config, schedule = run.resolve(dataset, runtime.dp_size)
    eot_id = dataset.eot_id
    resets = run.data.reset_at_documents and run.model_name != "transformer"  # softmax has no state
    torch.manual_seed(run.train.seed)
    model = build_model(model_config).to(runtime.device)

    def evaluate(m: nn.Module) -> dict[str, float]:
        result = evaluate_perplexity(
            m, dataset["val"], seq_len=run.data.seq_len, max_tokens=run.data.eval_tokens
        )
        return {"val_loss": result["nll"], "val_perplexity": result["perplexity"]}

    trainer = Trainer(
        model,
        run.train,
        schedule,
        run_dir,
        next_batch=make_batch_fn(run, dataset["train"], runtime, eot_id if resets else None),
        loss_fn=make_loss_fn(),
        evaluate=evaluate,
        tokens_per_batch=run.train.batch_size * run.data.seq_len,
        run_config={
            **run.to_saved_dict(),
            "resolved": {
                **schedule.to_dict(),
                "world_size": runtime.world_size,
                **({"context_parallel": runtime.cp_size} if runtime.cp_size > 1 else {}),
                "vocab_size": dataset.vocab_size,
                "tokenizer": dataset.meta["tokenizer"],
                "splits": {s: v["tokens"] for s, v in dataset.meta["splits"].items()},
            },
        },
        runtime=runtime,
        progress=progress,
    )
    return trainer.train(resume=resume)


def load_run(
    run_dir: str | Path, device: torch.device | str | None = None
) -> tuple[LMRun, TokenDataset, CausalModel]:
    """A trained run's config, dataset and model (``final/``, else the latest checkpoint)."""
    run = LMRun.load(run_dir)
    dataset = TokenDataset(run.data.path)
    trained_with = read_run_config(run_dir)["resolved"]["tokenizer"]
    if dataset.meta["tokenizer"] != trained_with:
        raise ValueError(
            f"tokenizer mismatch: the run was trained with {trained_with}, "
            f"{run.data.path} now holds {dataset.meta['tokenizer']}"
        )
    model_dir = trained_model_dir(run_dir)
    model = model_class(run.model).from_pretrained(model_dir, device=device)
    if model.config.vocab_size != dataset.vocab_size:
        raise ValueError(
            f"vocab mismatch: model {model_dir} has vocab_size {model.config.vocab_size}, "
            f"the dataset's tokenizer has {dataset.vocab_size}"
        )
    return run, dataset, model
