"""What the Memory Horizon test set asks of a model: the distribution of required memory spans,
and the accuracy a model would reach if it were perfect up to span s and at chance beyond.

The required span at position t is the number of tokens since the most recent reset (t + 1 with
none before t): the target is ``compress_memory`` of all of them, so a model that cannot carry
``span`` tokens of memory can only guess. With 3 resets in a sequence of 1024, most positions sit
far from the last reset; this ceiling says how much long-span skill an accuracy implies.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import torch

from gateloop.data.memory_horizon import make_memory_horizon, memory_span
from gateloop.experiments.memory_horizon import MemoryHorizonData

CEILING_SPANS = (8, 16, 32, 64, 128, 256)
HISTOGRAM_EDGES = (1, 8, 16, 32, 64, 128, 256, 512, 1024)


def span_analysis(data: MemoryHorizonData, spans: tuple[int, ...] = CEILING_SPANS) -> dict[str, Any]:
    """Span statistics of the test set of ``data`` and the perfect-up-to-s ceilings."""
    inputs, _ = make_memory_horizon(
        data.num_test,
        seq_len=data.seq_len,
        num_range=data.num_range,
        num_resets=data.num_resets,
        max_output=data.max_output,
        seed=data.test_seed,
    )
    span = memory_span(inputs, data.reset_id).flatten().double()  # (N·L,)
    chance = 1.0 / data.max_output
    ceilings = {
        int(s): float((span <= s).double().mean() + chance * (span > s).double().mean()) for s in spans
    }
    bins = []
    for low, high in itertools.pairwise(HISTOGRAM_EDGES):
        inside = (span >= low) & (span < high)
        bins.append({"from": low, "below": high, "fraction": float(inside.double().mean())})
    quantiles = torch.quantile(span, torch.tensor([0.25, 0.5, 0.75, 0.9], dtype=torch.float64))
    return {
        "seq_len": data.seq_len,
        "positions": int(span.numel()),
        "chance": chance,
        "mean_span": float(span.mean()),
        "quantiles": dict(zip(("p25", "p50", "p75", "p90"), map(float, quantiles), strict=True)),
        "fraction_at_least_64": float((span >= 64).double().mean()),
        "histogram": bins,
        "ceiling_by_span": ceilings,
    }


def write_span_report(analyses: list[dict[str, Any]], out_dir: str | Path) -> Path:
    """``span_analysis.md`` / ``.json`` / ``.png`` for analyses at several sequence lengths."""
    from gateloop.plots import plot_span_ceilings

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spans = list(analyses[0]["ceiling_by_span"])
    lines = [
        "# Memory Horizon: required memory spans of the test set",
        "",
        "Span at position t = tokens since the most recent reset (t + 1 without one); the target needs",
        "all of them. Ceiling(s) = accuracy of a model perfect up to span s and at chance (1/50) beyond.",
        "",
        "| L | mean span | median | p90 | spans >= 64 | "
        + " | ".join(f"ceiling s={s}" for s in spans)
        + " |",
        "|---" * (5 + len(spans)) + "|",
    ]
    for a in analyses:
        q = a["quantiles"]
        lines.append(
            f"| {a['seq_len']} | {a['mean_span']:.1f} | {q['p50']:.0f} | {q['p90']:.0f} | "
            f"{a['fraction_at_least_64']:.1%} | "
            + " | ".join(f"{a['ceiling_by_span'][s]:.3f}" for s in spans)
            + " |"
        )
    (out_dir / "span_analysis.md").write_text("\n".join(lines) + "\n")
    (out_dir / "span_analysis.json").write_text(json.dumps(analyses, indent=2) + "\n")
    plot_span_ceilings(analyses, out_dir / "span_analysis.png")
    print("\n".join(lines))
    return out_dir / "span_analysis.md"
