"""Language modelling (paper §5.2, Tables 1 and 4) on prepared token shards.

Models: ``gateloop`` (the paper's), ``gateloop-fixed`` (input-independent transitions) and
``transformer`` (the softmax baseline), all in one harness and trained by the shared trainer.
Batches are random windows of ``seq_len + 1`` tokens drawn as a pure function of
(seed, step, micro-batch), so resumption and multi-process runs see the same global batches.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gateloop.config_utils import dataclass_from_dict
from gateloop.data.prepare import TokenDataset
from gateloop.models import GateLoopConfig, GateLoopLM, TransformerConfig, TransformerLM
from gateloop.models.base import CausalModel
from gateloop.training import TrainConfig, Trainer, rank_and_world

MODELS = ("gateloop", "gateloop-fixed", "transformer")


@dataclass
class LMConfig:
    """One LM run. Defaults are the paper's Table 4 (= the ``wikitext103_125m`` preset)."""

    model: str = "gateloop"
    # model shape (GateLoop: d_qk = d_v = d_model over n_head heads; Transformer: n_head heads)
    d_model: int = 624
    n_layer: int = 12
    n_head: int = 624
    d_channel_mixing: int = 1872
    tie_embeddings: bool = False
    # context length: not stated in the paper; ours
    seq_len: int = 1024
    batch_size: int = 16  # per process
    grad_accum: int = 1
    max_steps: int = 0  # 0: derive from epochs over the training tokens
    epochs: float = 100.0
    lr: float = 1.25e-4
    transition_lr: float | None = 1e-4  # Table 4: state-transition projections, no weight decay
    weight_decay: float = 0.25
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 5000
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0  # not stated in the paper: ours
    reset_at_documents: bool = False  # restart the GateLoop state at end-of-text inside a window
    eval_every: int = 1000
    eval_tokens: int = 262_144  # validation tokens per periodic evaluation
    checkpoint_every: int = 1000
    autocast: str = "none"
    compile: bool = False
    seed: int = 0

    def validate(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}; got {self.model!r}")
        for name in (
            "d_model",
            "n_layer",
            "n_head",
            "d_channel_mixing",
            "seq_len",
            "batch_size",
            "grad_accum",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def model_config(self, vocab_size: int) -> GateLoopConfig | TransformerConfig:
        common = {
            "vocab_size": vocab_size,
            "d_model": self.d_model,
            "n_layer": self.n_layer,
            "d_channel_mixing": self.d_channel_mixing,
            "n_head": self.n_head,
            "tie_embeddings": self.tie_embeddings,
        }
        if self.model == "transformer":
            return TransformerConfig(**common)
        config = GateLoopConfig(**common, data_controlled=self.model == "gateloop")
        config.validate()
        return config

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMConfig:
        return dataclass_from_dict(cls, data)


def attention_heads(d_model: int) -> int:
    """Head count for the Transformer: head dims even and as close to 64 as d_model allows."""
    options = [h for h in range(1, d_model + 1) if d_model % h == 0 and (d_model // h) % 2 == 0]
    return min(options, key=lambda h: (abs(d_model // h - 64), h))


def preset(name: str, **overrides: Any) -> LMConfig:
    """``wikitext103_125m``: paper Table 4. ``cpu``: a few-M-parameter model for 2 CPU cores."""
    if name == "wikitext103_125m":
        base: dict[str, Any] = {}
    elif name == "cpu":
        # measured on 2 cores (torch 2.13): 3.35M parameters with a 8192-id BPE, 0.69 s a step,
        # 1000 steps (4.1M tokens) in about 12 minutes per model
        base = {
            "d_model": 192,
            "n_layer": 4,
            "n_head": 192,  # SISO heads, as in the paper's LM
            "d_channel_mixing": 576,  # 3 x d_model, as the paper's 624 -> 1872
            "tie_embeddings": True,
            "seq_len": 256,
            "batch_size": 16,
            "max_steps": 1000,
            "lr": 2e-3,
            "transition_lr": None,
            "weight_decay": 0.1,
            "warmup_steps": 100,
            "min_lr_ratio": 0.1,
            "eval_every": 250,
            "eval_tokens": 32_768,
            "checkpoint_every": 250,
        }
    else:
        raise ValueError(f"unknown preset {name!r}; choose 'wikitext103_125m' or 'cpu'")
    config = LMConfig(**{**base, **overrides})
    if config.model == "transformer" and "n_head" not in overrides:
        config.n_head = attention_heads(config.d_model)
    config.validate()
    return config


def window_batch(tokens: np.ndarray, *, seq_len: int, rows: int, generator: torch.Generator) -> Tensor:
    """``rows`` random windows of ``seq_len + 1`` tokens: LongTensor [rows, seq_len + 1]."""
    if len(tokens) < seq_len + 1:
        raise ValueError(f"the split has {len(tokens)} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    starts = torch.randint(0, len(tokens) - seq_len, (rows,), generator=generator)
    return torch.stack(
        [torch.from_numpy(tokens[s : s + seq_len + 1].astype(np.int64)) for s in starts.tolist()]
    )


def document_ids(inputs: Tensor, eot_id: int) -> Tensor:
    """Document index per position: a new document starts after every end-of-text token."""
    eot = (inputs == eot_id).long()
    return torch.cumsum(eot, dim=1) - eot


def make_batch_fn(config: LMConfig, tokens: np.ndarray, *, rank: int, world_size: int, device: torch.device):
    """Batches as a pure function of (seed, step, micro): every process draws the same global batch
    of ``batch_size * world_size`` windows and keeps its own rows."""

    def next_batch(step: int, micro: int) -> Tensor:
        g = torch.Generator().manual_seed(((config.seed * 1_000_003 + step) * 101 + micro) % 2**63)
        rows = window_batch(tokens, seq_len=config.seq_len, rows=config.batch_size * world_size, generator=g)
        return rows[rank * config.batch_size : (rank + 1) * config.batch_size].to(device)

    return next_batch


def make_loss_fn(eot_id: int, reset_at_documents: bool):
    def loss_fn(model: CausalModel, batch: Tensor) -> tuple[Tensor, dict[str, float]]:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        kwargs = {"document_ids": document_ids(inputs, eot_id)} if reset_at_documents else {}
        logits = model(inputs, **kwargs)  # (B, L, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()), {}

    return loss_fn


@torch.no_grad()
def evaluate_perplexity(
    model: CausalModel,
    tokens: np.ndarray,
    *,
    seq_len: int,
    stride: int | None = None,
    max_tokens: int | None = None,
) -> dict[str, float]:
    """Perplexity = exp(mean NLL over the scored tokens).

    Non-overlapping windows of ``seq_len`` by default (every token scored once, with the context
    inside its window); with ``stride`` < seq_len, windows advance by ``stride`` and only their
    last ``stride`` tokens are scored (a sliding window: more context per token).
    """
    stride = stride or seq_len
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride must be in [1, seq_len = {seq_len}], got {stride}")
    n = len(tokens) if max_tokens is None else min(len(tokens), max_tokens + 1)
    if n < 2:
        raise ValueError(f"the split has {n} tokens; need at least 2 to score")
    device = next(model.parameters()).device
    model.eval()
    nll, count, scored_until = 0.0, 0, 0  # targets 1..scored_until are already scored
    for begin in range(0, n - 1, stride):
        end = min(begin + seq_len, n - 1)  # inputs tokens[begin:end], targets tokens[begin + 1:end + 1]
        window = torch.from_numpy(tokens[begin : end + 1].astype(np.int64)).to(device)[None]
        logits = model(window[:, :-1]).float()[0]  # (length, V)
        losses = F.cross_entropy(logits, window[0, 1:], reduction="none")[scored_until - begin :]
        nll += float(losses.sum())
        count += losses.numel()
        scored_until = end
        if end == n - 1:
            break
    mean = nll / count
    return {"nll": mean, "perplexity": math.exp(mean), "tokens": count, "seq_len": seq_len, "stride": stride}


def build_model(config: LMConfig, vocab_size: int) -> CausalModel:
    model_config = config.model_config(vocab_size)
    return TransformerLM(model_config) if config.model == "transformer" else GateLoopLM(model_config)  # type: ignore[arg-type]


def train(
    config: LMConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train one LM on a prepared dataset (one process, or one rank of a torchrun job)."""
    config.validate()
    torch.set_flush_denormal(True)  # why: subnormal decays are ~100x slower on CPU (NUMERICS.md)
    dataset = TokenDataset(data_dir)
    rank, world = rank_and_world()
    device = torch.device(device or "cpu")
    eot_id = int(dataset.meta["tokenizer"]["eot_id"])
    train_tokens = dataset["train"]
    for split in ("train", "val"):
        if len(dataset[split]) < config.seq_len + 1:
            raise ValueError(
                f"seq_len {config.seq_len} is beyond the data: split {split!r} of {data_dir} has only "
                f"{len(dataset[split])} tokens"
            )
    tokens_per_step = config.batch_size * config.grad_accum * world * config.seq_len
    max_steps = config.max_steps or max(1, int(config.epochs * len(train_tokens) / tokens_per_step))
    torch.manual_seed(config.seed)
    model = build_model(config, dataset.vocab_size).to(device)
    train_config = TrainConfig(
        max_steps=max_steps,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        betas=config.betas,
        warmup_steps=min(config.warmup_steps, max_steps),
        min_lr_ratio=config.min_lr_ratio,
        grad_clip=config.grad_clip,
        grad_accum=config.grad_accum,
        transition_lr=config.transition_lr,
        log_every=10,
        eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every,
        seed=config.seed,
        progress=progress,
        autocast=config.autocast,
        compile=config.compile,
    )

    def evaluate(m: CausalModel) -> dict[str, float]:
        result = evaluate_perplexity(m, dataset["val"], seq_len=config.seq_len, max_tokens=config.eval_tokens)
        return {"val_loss": result["nll"], "val_perplexity": result["perplexity"]}

    trainer = Trainer(
        model,
        train_config,
        run_dir,
        next_batch=make_batch_fn(config, train_tokens, rank=rank, world_size=world, device=device),
        loss_fn=make_loss_fn(eot_id, config.reset_at_documents and config.model != "transformer"),
        evaluate=evaluate,
        tokens_per_batch=config.batch_size * config.seq_len,
        run_config={
            "experiment": "lm",
            "lm": dataclasses.asdict(config),
            "data": {
                "dir": str(Path(data_dir).resolve()),
                "tokenizer": dataset.meta["tokenizer"],
                "splits": {s: v["tokens"] for s, v in dataset.meta["splits"].items()},
            },
            "world_size": world,
        },
    )
    result = trainer.fit(resume=resume)
    return {"steps": trainer.step, "parameters": model.num_parameters(), **result}


def load_run(run_dir: str | Path) -> tuple[LMConfig, TokenDataset, CausalModel]:
    """A trained run's config, dataset and model (``final/``, else the latest checkpoint)."""
    from gateloop.training import trained_model_dir

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} not found: --run must be a run directory of `gateloop train lm`"
        )
    run_config = json.loads(config_path.read_text())
    if run_config.get("experiment") != "lm":
        raise ValueError(f"{config_path} is not a language-model run")
    config = LMConfig.from_dict(run_config["lm"])
    dataset = TokenDataset(run_config["data"]["dir"])
    if dataset.meta["tokenizer"] != run_config["data"]["tokenizer"]:
        raise ValueError(
            f"tokenizer mismatch: the run was trained with {run_config['data']['tokenizer']}, "
            f"{run_config['data']['dir']} now holds {dataset.meta['tokenizer']}"
        )
    model_dir = trained_model_dir(run_dir)
    model_cls = TransformerLM if config.model == "transformer" else GateLoopLM
    model = model_cls.from_pretrained(model_dir)
    if model.config.vocab_size != dataset.vocab_size:
        raise ValueError(
            f"vocab mismatch: model {model_dir} has vocab_size {model.config.vocab_size}, "
            f"the dataset's tokenizer has {dataset.vocab_size}"
        )
    return config, dataset, model


PAPER_TABLE_1 = {"transformer": 18.6, "gateloop": 13.4}  # WikiText-103 test perplexity, 125M models


def matched_config(config: LMConfig, model: str) -> LMConfig:
    """``config`` for ``model`` with the parameter count matched to GateLoop's.

    A GateLoop layer has 6·d² time-mixing weights (q, k, v, α, β, out), attention 4·d² (q, k, v,
    out); the Transformer gets ``d_channel_mixing + d_model`` FFN units, which adds the missing
    2·d² per layer; the fixed variant drops the α, β projections (2·d² per layer) for one α, β per
    channel and gets the same FFN compensation.
    """
    extra = config.d_model if model in ("transformer", "gateloop-fixed") else 0
    fields = {**config.__dict__, "model": model, "d_channel_mixing": config.d_channel_mixing + extra}
    if model == "transformer":
        fields["n_head"] = attention_heads(config.d_model)
    matched = LMConfig(**fields)
    matched.validate()
    return matched


def unigram_perplexity(train: np.ndarray, test: np.ndarray, vocab_size: int) -> float:
    """Perplexity of the add-one-smoothed unigram distribution of the training tokens on ``test``."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(np.exp(-log_p[test[1:]].mean()))


def run_experiment(
    preset_name: str,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train GateLoop, the fixed-transition variant and the Transformer on the same tokens with the
    same steps and matched parameter counts; evaluate on test; write results.md and a plot."""
    import time

    from gateloop.plots import plot_validation_curves
    from gateloop.training import MetricsLogger

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = preset(preset_name, **(overrides or {}))
    dataset = TokenDataset(data_dir)
    results: dict[str, Any] = {}
    for model in MODELS:
        config = matched_config(base, model)
        print(f"[lm] training {model}", flush=True)
        start = time.perf_counter()
        train_result = train(config, data_dir, out_dir / model, resume=resume, progress=progress)
        wall = time.perf_counter() - start
        _, _, trained = load_run(out_dir / model)
        test = evaluate_perplexity(trained, dataset["test"], seq_len=config.seq_len)
        results[model] = {**train_result, "test": test, "wall_time_s": wall}
    counts = [results[m]["parameters"] for m in MODELS]
    spread = (max(counts) - min(counts)) / min(counts)
    unigram = unigram_perplexity(dataset["train"], dataset["test"], dataset.vocab_size)
    tokens = {m: base.batch_size * base.seq_len * base.grad_accum for m in MODELS}
    plot = plot_validation_curves(
        {m: MetricsLogger(out_dir / m).read() for m in MODELS}, tokens, out_dir / "validation_loss.png"
    )
    lines = [
        f"# Language modelling, preset `{preset_name}`, data `{Path(data_dir).name}` "
        f"(tokenizer {dataset.meta['tokenizer']['name']}, {len(dataset['train']):,} training tokens)",
        "",
        f"Same tokens, {results[MODELS[0]]['steps']} steps of {base.batch_size} x {base.seq_len} tokens "
        f"for every model; parameter counts within {100 * spread:.1f}%. Test perplexity: exp(mean NLL), "
        f"non-overlapping windows of {base.seq_len}. "
        f"Unigram baseline (add-one) test perplexity: {unigram:.1f}.",
        "",
        "| model | parameters | test perplexity (ours) | paper Table 1, WikiText-103, 125M | wall time |",
        "|---|---|---|---|---|",
    ]
    for m in MODELS:
        r = results[m]
        paper = f"{PAPER_TABLE_1[m]} (paper)" if m in PAPER_TABLE_1 else "—"
        ppl, minutes = r["test"]["perplexity"], r["wall_time_s"] / 60
        lines.append(f"| {m} | {r['parameters']:,} | {ppl:.2f} | {paper} | {minutes:.1f} min |")
    lines += ["", f"- validation loss against training tokens: `{plot.name}`"]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    (out_dir / "results.json").write_text(
        json.dumps({"preset": preset_name, "unigram_perplexity": unigram, "results": results}, indent=2)
        + "\n"
    )
    print("\n".join(lines))
    print(f"\n[lm] wrote {out_dir.resolve()}")
    return results
