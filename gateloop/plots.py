"""PNG plots (matplotlib, headless ``Agg``): training curves and the Memory Horizon figures.

matplotlib is imported inside each function so that ``import gateloop`` never loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_training_curves(runs: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Training loss and test accuracy against step, one line per run (``{label: metrics rows}``)."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in runs.items():
        train = [r for r in rows if "loss" in r]
        evals = [r for r in rows if "test_accuracy" in r]
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=label)
        if evals:
            ax_acc.plot([r["step"] for r in evals], [r["test_accuracy"] for r in evals], "o-", label=label)
    ax_loss.set(xlabel="step", ylabel="training loss (cross-entropy)", yscale="log", title="Training loss")
    ax_acc.set(xlabel="step", ylabel="test accuracy", title="Test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_transition_magnitudes(
    magnitudes: Sequence[Tensor], resets: Sequence[int], path: str | Path, *, title: str = ""
) -> Path:
    """Paper Fig 5: |a| per layer (channels x time heat maps) and the mean over channels and layers,
    with reset positions marked. ``magnitudes``: one [L, channels] tensor per layer."""
    plt = _pyplot()
    n = len(magnitudes)
    # constrained layout keeps the heat maps and the mean plot on one x axis beside the colour bar
    fig, axes = plt.subplots(n + 1, 1, figsize=(12, 1.6 * n + 2.4), sharex=True, layout="constrained")
    L = magnitudes[0].shape[0]
    for i, (ax, mag) in enumerate(zip(axes[:-1], magnitudes, strict=True)):
        im = ax.imshow(
            mag.T.float().numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest"
        )
        ax.set_ylabel(f"layer {i}\nchannel")
        for r in resets:
            ax.axvline(r, color="red", lw=0.8, ls="--")
    mean = torch.stack([m.float().mean(-1) for m in magnitudes]).mean(0)  # (L,)
    axes[-1].plot(range(L), mean.numpy(), color="black", lw=1)
    for r in resets:
        axes[-1].axvline(r, color="red", lw=0.8, ls="--", label="reset token" if r == resets[0] else None)
    axes[-1].set(xlabel="position", ylabel="mean |a|", ylim=(0, 1.02), xlim=(-0.5, L - 0.5))
    if resets:
        axes[-1].legend(loc="lower right")
    fig.colorbar(im, ax=axes.tolist(), label="|a|", fraction=0.02)
    fig.suptitle(title or "State-transition magnitudes |a| on a test sample (resets dashed)")
    return _save(fig, path)


def plot_accuracy_by_span(
    curves: dict[str, dict[int, dict[str, float]]], path: str | Path, *, bin_width: int = 10
) -> Path:
    """Paper Fig 7: test accuracy against required memory span, one line per variant.

    ``curves``: {label: {span: {"accuracy": a, "count": n}}}; spans are pooled into bins of
    ``bin_width`` (count-weighted) so that rare long spans do not make the plot noisy.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, by_span in curves.items():
        bins: dict[int, list[float]] = {}
        for span, stats in by_span.items():
            b = int(span) // bin_width
            acc = bins.setdefault(b, [0.0, 0.0])
            acc[0] += stats["accuracy"] * stats["count"]
            acc[1] += stats["count"]
        xs = sorted(bins)
        ax.plot(
            [(b + 0.5) * bin_width for b in xs],
            [bins[b][0] / bins[b][1] for b in xs],
            "o-",
            ms=3,
            label=label,
        )
    ax.set(xlabel="required memory span (tokens since the last reset)", ylabel="test accuracy", ylim=(0, 1))
    ax.set_title("Test accuracy vs required memory span")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_validation_curves(
    runs: dict[str, list[dict[str, Any]]], tokens_per_step: dict[str, int], path: str | Path
) -> Path:
    """Validation loss against training tokens, one line per model."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, rows in runs.items():
        evals = [r for r in rows if "val_loss" in r]
        ax.plot(
            [r["step"] * tokens_per_step[label] for r in evals],
            [r["val_loss"] for r in evals],
            "o-",
            label=label,
        )
    ax.set(xlabel="training tokens", ylabel="validation loss (nats/token)", title="Validation loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_span_ceilings(analyses: list[dict[str, Any]], path: str | Path) -> Path:
    """Left: the distribution of required memory spans per sequence length; right: the accuracy
    ceiling of a model perfect up to span s and at chance beyond."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for a in analyses:
        labels = [f"{b['from']}-{b['below'] - 1}" for b in a["histogram"]]
        left.plot(labels, [b["fraction"] for b in a["histogram"]], "o-", label=f"L = {a['seq_len']}")
        spans = [int(s) for s in a["ceiling_by_span"]]
        right.plot(spans, list(a["ceiling_by_span"].values()), "o-", label=f"L = {a['seq_len']}")
    left.set(xlabel="required memory span (tokens)", ylabel="fraction of test positions")
    left.tick_params(axis="x", rotation=45)
    right.set(
        xscale="log", xlabel="span s a model is perfect up to", ylabel="test accuracy ceiling", ylim=(0, 1)
    )
    right.set_xticks(spans, [str(s) for s in spans])
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_ablation_bars(
    values: dict[str, list[float]], path: str | Path, *, ylabel: str, title: str = ""
) -> Path:
    """One bar per variant at the mean over seeds, error bars of one sample standard deviation
    (none for a single seed), and each seed's value as a dot. ``values``: {variant: [per seed]}."""
    import statistics

    plt = _pyplot()
    names = list(values)
    means = [statistics.fmean(values[n]) for n in names]
    stds = [statistics.stdev(values[n]) if len(values[n]) > 1 else 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 4.5))
    ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.7)
    for i, name in enumerate(names):
        ax.plot([i] * len(values[name]), values[name], "k.", ms=5, label="seeds" if i == 0 else None)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set(ylabel=ylabel, title=title or f"{ylabel}: mean ± sample std over seeds")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
