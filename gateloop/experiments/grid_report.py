"""The ablation grid's report: mean ± sample std over seeds of each metric per variant, the
parameter counts and wall times, as ``results.md``, ``results.json`` and a bar plot with error
bars (``ablations.png``)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateloop.experiments.variants import VARIANTS
from gateloop.training.wall_time import minutes

if TYPE_CHECKING:
    from gateloop.experiments.run_config import RunConfig
    from gateloop.experiments.tasks import Task


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (n - 1 in the denominator; None for one value) and n."""
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "values": values}


def aggregate(records: Sequence[dict[str, Any]], metric_keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per variant (in first-seen order): each metric's mean ± std over seeds, parameter counts
    and mean wall time per run."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_variant.setdefault(record["variant"], []).append(record)
    out = {}
    for variant, rows in by_variant.items():
        walls = [r["wall_time_s"] for r in rows if r.get("wall_time_s") is not None]
        out[variant] = {
            "seeds": [r["seed"] for r in rows],
            "parameters": rows[0]["parameters"],
            "non_embedding_parameters": rows[0]["non_embedding_parameters"],
            "steps": rows[0]["steps"],
            "n_head": rows[0].get("n_head"),
            "d_channel_mixing": rows[0].get("d_channel_mixing"),
            "wall_time_s": mean_std(walls) if walls else None,
            "metrics": {k: mean_std([r["metrics"][k] for r in rows]) for k in metric_keys},
        }
    return out


def format_mean_std(stats: Mapping[str, Any], digits: int) -> str:
    """``0.528 ± 0.012 (n=3)``; one seed: ``0.528 (n=1)``."""
    std = "" if stats["std"] is None else f" ± {stats['std']:.{digits}f}"
    return f"{stats['mean']:.{digits}f}{std} (n={stats['n']})"


def table_lines(task: Task, aggregates: Mapping[str, dict[str, Any]]) -> list[str]:
    metrics = task.metrics
    header = ["variant", *[m.label for m in metrics], "parameters", "non-embedding", "wall time per run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, agg in aggregates.items():
        wall = agg["wall_time_s"]
        cells = [
            f"`{variant}`",
            *[format_mean_std(agg["metrics"][m.key], m.digits) for m in metrics],
            f"{agg['parameters']:,}",
            f"{agg['non_embedding_parameters']:,}",
            minutes(None if wall is None else wall["mean"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(
    task: Task,
    runs: Mapping[tuple[str, int], RunConfig],
    records: Sequence[dict[str, Any]],
    out_dir: Path,
    *,
    name: str,
    quiet: bool = False,
) -> dict[str, Any]:
    """results.md, results.json and ablations.png in ``out_dir`` (the table printed unless
    ``quiet``); returns the JSON summary. Runs of ``runs`` without a record are named as missing."""
    from gateloop.plots import plot_ablation_bars

    headline = task.metrics[0]
    aggregates = aggregate(records, [m.key for m in task.metrics])
    plot = plot_ablation_bars(
        {v: a["metrics"][headline.key]["values"] for v, a in aggregates.items()},
        out_dir / "ablations.png",
        ylabel=headline.label,
        title=f"Ablations, {task.name} (preset {name})\n{headline.label}: mean ± sample std over seeds",
    )
    base = next(iter(runs.values()))
    done = {(r["variant"], r["seed"]) for r in records}
    missing = [key for key in sorted(runs, key=lambda key: key[1]) if key not in done]  # grid order
    variants = list(dict.fromkeys(v for v, _ in runs))  # the grid's, in grid order
    lines = _header(task, base, name, aggregates, records, missing, variants)
    lines += table_lines(task, aggregates) + _footer(aggregates, plot)
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    summary = {
        "task": task.name,
        "preset": name,
        "headline": headline.key,
        "budget": {"train": base.train.to_dict(), "data": base.to_dict()["data"]},
        "variants": {
            v: {"description": VARIANTS[v].description, "model": runs[v, a["seeds"][0]].model.to_dict()}
            for v, a in aggregates.items()
        },
        "aggregates": aggregates,
        "runs": list(records),
        "missing": [{"variant": v, "seed": seed} for v, seed in missing],
    }
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    if quiet:
        return summary
    print("\n".join(lines))
    print(f"\n[ablations] wrote {(out_dir / 'results.md').resolve()}, results.json and {plot.name}")
    return summary


def _header(
    task: Task,
    base: Any,
    name: str,
    aggregates: Mapping[str, dict[str, Any]],
    records: Sequence[dict[str, Any]],
    missing: Sequence[tuple[str, int]],
    variants: Sequence[str],
) -> list[str]:
    train = base.train
    steps = sorted({a["steps"] for a in aggregates.values()})
    counts = [a["non_embedding_parameters"] for a in aggregates.values()]
    lines = [
        f"# Ablations: {task.name}, preset `{name}`",
        "",
        f"Every variant trains with the same budget: {'/'.join(map(str, steps))} steps of batch "
        f"{train.batch_size}, lr {train.lr} (warm-up then cosine), seq_len {base.data.seq_len}; seeds set "
        "model init and data order. Each cell is mean ± sample standard deviation (n - 1) over n seeds. "
        "Parameter counts are matched by the FFN width: the non-embedding counts (blocks and final norm) "
        f"are within {100 * spread(counts):.2f} % of each other.",
        "",
        f"Machine: {_distinct(records, 'cpu')}; {_distinct(records, 'threads')} CPU thread(s) per run.",
        "",
    ]
    if missing:
        done = f"**Partial: {len(records)} of {len(records) + len(missing)} runs finished**"
        lines += [f"{done}; missing: {_missing(missing, variants)}.", ""]
    return lines


def _missing(missing: Sequence[tuple[str, int]], variants: Sequence[str]) -> str:
    """``seed 0: fixed, real; seed 1: every variant`` (every one of the grid's ``variants``)."""
    by_seed: dict[int, list[str]] = {}
    for variant, seed in missing:
        by_seed.setdefault(seed, []).append(variant)
    return "; ".join(
        f"seed {seed}: " + ("every variant" if len(names) == len(variants) else ", ".join(names))
        for seed, names in by_seed.items()
    )


def _distinct(records: Sequence[dict[str, Any]], key: str) -> str:
    """The values of ``key`` over the records, joined ("unrecorded" for records made before it)."""
    return " / ".join(sorted({str(r.get(key) or "unrecorded") for r in records}))


def _footer(aggregates: Mapping[str, dict[str, Any]], plot: Path) -> list[str]:
    lines = ["", "Variants:", ""]
    lines += [
        f"- `{v}` ({a['n_head']} heads, FFN {a['d_channel_mixing']}): {VARIANTS[v].description}"
        for v, a in aggregates.items()
    ]
    lines += ["", f"- bar plot with error bars: `{plot.name}`"]
    return lines


def spread(values: Sequence[int]) -> float:
    """(max - min) / min of parameter counts."""
    return (max(values) - min(values)) / min(values)
