"""The LM comparison end to end: GateLoop, its fixed-transition variant and the Transformer on the
same tokens for the same steps with matched parameter counts; test perplexity of the models
training returned, a unigram baseline, the paper's Table 1 beside ours, and validation curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gateloop.data.tokens import TokenDataset
from gateloop.experiments.language_model import MODELS, LMRun, as_model, evaluate_perplexity, train
from gateloop.training import MetricsLogger, Runtime, current_runtime
from gateloop.training.wall_time import minutes

PAPER_TABLE_1 = {"transformer": 18.6, "gateloop": 13.4}  # WikiText-103 test perplexity, 125M models


def unigram_perplexity(train_tokens: np.ndarray, test: np.ndarray, vocab_size: int) -> float:
    """Perplexity of the add-one-smoothed unigram distribution of the training tokens on ``test``."""
    counts = np.bincount(train_tokens, minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(np.exp(-log_p[test[1:]].mean()))


def run_experiment(
    base: LMRun,
    out_dir: str | Path,
    *,
    name: str = "custom",
    resume: bool = False,
    progress: bool = True,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Train every model of ``MODELS`` from the GateLoop run ``base``; write results.md,
    results.json and validation_loss.png."""
    runtime = runtime or current_runtime()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = TokenDataset(base.data.path)
    results: dict[str, Any] = {}
    for model in MODELS:
        run = as_model(base, model, match_parameters=True)
        if runtime.is_main:
            print(f"[lm] training {model}", flush=True)
        trained = train(
            run, out_dir / model, resume=resume, progress=progress, runtime=runtime, dataset=dataset
        )
        test = evaluate_perplexity(trained.model, dataset["test"], seq_len=run.data.seq_len)
        results[model] = {**trained.summary(), "test": test, "wall_time_s": trained.wall_time_s}
    if runtime.is_main:
        _write_reports(base, name, dataset, results, out_dir)
    return results


def _write_reports(
    base: LMRun, name: str, dataset: TokenDataset, results: dict[str, Any], out_dir: Path
) -> None:
    from gateloop.plots import plot_validation_curves

    counts = [results[m]["parameters"] for m in MODELS]
    spread = (max(counts) - min(counts)) / min(counts)
    unigram = unigram_perplexity(dataset["train"], dataset["test"], dataset.vocab_size)
    tokens = {m: base.train.batch_size * base.data.seq_len * base.train.grad_accum for m in MODELS}
    plot = plot_validation_curves(
        {m: MetricsLogger(out_dir / m).read() for m in MODELS}, tokens, out_dir / "validation_loss.png"
    )
    lines = [
        f"# Language modelling, preset `{name}`, data `{Path(base.data.path).name}` "
        f"(tokenizer {dataset.meta['tokenizer']['name']}, {len(dataset['train']):,} training tokens)",
        "",
        f"Same tokens, {results[MODELS[0]]['steps']} steps of {base.train.batch_size} x {base.data.seq_len} "
        f"tokens for every model; parameter counts within {100 * spread:.1f}%. Test perplexity: exp(mean "
        f"NLL), non-overlapping windows of {base.data.seq_len}. "
        f"Unigram baseline (add-one) test perplexity: {unigram:.1f}.",
        "",
        "| model | parameters | test perplexity (ours) | paper Table 1, WikiText-103, 125M | wall time |",
        "|---|---|---|---|---|",
    ]
    for m in MODELS:
        r = results[m]
        paper = f"{PAPER_TABLE_1[m]} (paper)" if m in PAPER_TABLE_1 else "—"
        ppl = r["test"]["perplexity"]
        lines.append(f"| {m} | {r['parameters']:,} | {ppl:.2f} | {paper} | {minutes(r['wall_time_s'])} |")
    lines += ["", f"- validation loss against training tokens: `{plot.name}`"]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    summary = {"preset": name, "unigram_perplexity": unigram, "results": results}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(lines))
    print(f"\n[lm] wrote {out_dir.resolve()}")
