"""Training-step speed: whole models, forward + loss + backward + AdamW step.

Questions:
1. Memory Horizon (paper Table 3 model: 4 layers, d_model 64, 64 SISO heads), batch 32, L = 1024:
   how much faster is a step with our operator than the same model with lucidrains'
   ``gate_loop_operator`` swapped in (checked to compute the same outputs first)?
2. Language modelling at ~20M parameters (8 layers, d_model 384, SISO heads, 8192-id vocabulary)
   vs a parameter-matched ``TransformerLM`` (SDPA attention) at L = 1024 and L = 4096 with the
   same tokens per step: where does GateLoop's linear cost overtake attention's quadratic one?

Each row runs in a fresh process; times are medians of ``--repeats`` steps after one warm-up.

    python benchmarks/training_step.py
    python benchmarks/training_step.py --rows mh-ours,mh-peer
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import torch
import torch.nn.functional as F

from common import (
    comma_choices,
    environment,
    fmt_time,
    header,
    median_time,
    peer_operator,
    prepare_worker,
    run_isolated,
    write_results,
)

LM_SHAPE = {"d_model": 384, "n_layer": 8, "n_head": 384, "d_channel_mixing": 1152, "vocab_size": 8192}
TOKENS_PER_STEP = 8192
ROWS: dict[str, dict[str, Any]] = {
    "mh-ours": {"task": "memory-horizon", "impl": "ours", "B": 32, "L": 1024},
    "mh-peer": {"task": "memory-horizon", "impl": "peer", "B": 32, "L": 1024},
    "lm-gateloop-1024": {"task": "lm", "impl": "gateloop", "B": TOKENS_PER_STEP // 1024, "L": 1024},
    "lm-transformer-1024": {"task": "lm", "impl": "transformer", "B": TOKENS_PER_STEP // 1024, "L": 1024},
    "lm-gateloop-4096": {"task": "lm", "impl": "gateloop", "B": TOKENS_PER_STEP // 4096, "L": 4096},
    "lm-transformer-4096": {"task": "lm", "impl": "transformer", "B": TOKENS_PER_STEP // 4096, "L": 4096},
}


def _swap_in_peer() -> None:
    """Route every GateLoop layer's operator call to the peer (SISO: one transition per head)."""
    import gateloop.layers.gate_loop_layer as layer_module

    peer = peer_operator()

    def peer_gate_loop(q, k, v, *, log_a, initial_state=None, output_final_state=False, **_: object):  # type: ignore[no-untyped-def]
        if initial_state is not None or output_final_state or log_a.shape[-1] != 1:
            raise ValueError("the peer runs stateless calls with one transition per head only")
        return peer(q, k, v, log_a), None

    layer_module.gate_loop = peer_gate_loop  # type: ignore[assignment]


def _build(row: dict[str, Any]) -> tuple[torch.nn.Module, int, int]:
    """(model, input vocabulary, output classes)."""
    from gateloop.experiments.language_model import as_model, preset
    from gateloop.models import GateLoopConfig, GateLoopLM
    from gateloop.models.registry import build_model

    torch.manual_seed(0)
    if row["task"] == "memory-horizon":
        config = GateLoopConfig.memory_horizon()
        return GateLoopLM(config), config.vocab_size, config.head_vocab_size
    shape = {f"model.{k}": v for k, v in LM_SHAPE.items()}
    lm = preset("cpu", overrides={**shape, "model.tie_embeddings": False})
    model = build_model(as_model(lm, row["impl"], match_parameters=True).model)
    return model, LM_SHAPE["vocab_size"], LM_SHAPE["vocab_size"]


def worker(name: str, repeats: int) -> dict[str, Any]:
    prepare_worker()
    row = ROWS[name]
    model, vocab, classes = _build(row)
    g = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, vocab, (row["B"], row["L"]), generator=g)
    targets = torch.randint(0, classes, (row["B"], row["L"]), generator=g)
    result: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    if row["impl"] == "peer":
        small = inputs[:2, :64]
        with torch.no_grad():
            ours = model(small)
            _swap_in_peer()
            theirs = model(small)
        result["max_abs_diff_vs_ours"] = float((ours - theirs).abs().max())
        assert result["max_abs_diff_vs_ours"] < 1e-3, "the peer must compute the same model"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = median_time(step, repeats)
    result.update({"times_s": times, "median_s": statistics.median(times)})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default=",".join(ROWS), help="comma list of " + ", ".join(ROWS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--worker", metavar="ROW", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats)))
        return
    names = comma_choices(parser, "--rows", args.rows, ROWS, "row")
    env = environment()
    results = []
    for name in names:
        r = run_isolated(__file__, [name, "--repeats", str(args.repeats)], args.timeout)
        r.update({"row": name, **ROWS[name]})
        results.append(r)
        print(
            f"  {name:>22}: {fmt_time(r.get('median_s'))} {r.get('skipped', '')}", file=sys.stderr, flush=True
        )

    by = {r["row"]: r for r in results}
    lines = [
        header("Training step (forward, loss, backward, AdamW), float32", env, f"median of {args.repeats}"),
        "",
        "| row | model | params | batch × L | step | tokens/s | comparison |",
        "|---|---|---|---|---|---|---|",
    ]
    pairs = {
        "mh-ours": "mh-peer",
        "lm-gateloop-1024": "lm-transformer-1024",
        "lm-gateloop-4096": "lm-transformer-4096",
    }
    for r in results:
        t = r.get("median_s")
        tokens = r["B"] * r["L"]
        other = by.get(pairs.get(r["row"], ""), {})
        comparison = r.get("skipped", "")
        if t and other.get("median_s"):
            comparison = f"{float(other['median_s']) / float(t):.2f}× faster than {other['row']}"
        lines.append(
            f"| {r['row']} | {r['task']}: {r['impl']} | {r.get('parameters', 0) / 1e6:.2f}M | "
            f"{r['B']} × {r['L']} | {fmt_time(t)} | {tokens / t:,.0f} | {comparison} |"
            if t
            else f"| {r['row']} | {r['task']}: {r['impl']} | — | {r['B']} × {r['L']} | — | — | {comparison} |"
        )
    write_results("training_step", env, results, "\n".join(lines), lm_shape=LM_SHAPE)


if __name__ == "__main__":
    main()
