"""Generation: time per new token after prompts of 128 to 8192 tokens, 125M presets.

Question: is GateLoop's per-token cost O(1) — flat in the prompt length, because the state is a
fixed [B, H, dk, dv] per layer — while the Transformer's grows with its KV cache? Both models are
the paper's 125M configurations (``GateLoopConfig`` / ``TransformerConfig.wikitext103_125m``),
randomly initialised (speed does not depend on the weights), batch 1, float32, greedy steps. Each
(model, prompt length) runs in a fresh process: one prefill, then ``--tokens`` cached steps, of
which the median is reported (the first step is a warm-up).

    python benchmarks/generation.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch

from common import comma_choices, environment, fmt_time, header, prepare_worker, run_isolated, write_results

MODELS = ("gateloop", "transformer")
PROMPTS = (128, 512, 2048, 8192)


def worker(model_name: str, prompt: int, tokens: int) -> dict[str, Any]:
    from gateloop.models import GateLoopConfig, GateLoopLM, TransformerConfig, TransformerLM

    prepare_worker()
    torch.manual_seed(0)
    if model_name == "gateloop":
        model: torch.nn.Module = GateLoopLM(GateLoopConfig.wikitext103_125m())
    else:
        model = TransformerLM(TransformerConfig.wikitext103_125m())
    model.eval()
    ids = torch.randint(0, 50257, (1, prompt))
    with torch.no_grad():
        start = time.perf_counter()
        logits, state = model(ids, return_state=True)
        prefill = time.perf_counter() - start
        steps = []
        token = logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(tokens + 1):
            start = time.perf_counter()
            logits, state = model(token, state=state, return_state=True)
            token = logits[:, -1].argmax(-1, keepdim=True)
            steps.append(time.perf_counter() - start)
    steps = steps[1:]  # the first step warms up
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "prefill_s": prefill,
        "step_times_s": steps,
        "median_s": statistics.median(steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--prompts", default=",".join(map(str, PROMPTS)))
    parser.add_argument("--tokens", type=int, default=32, help="timed new tokens per run (median)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "PROMPT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.tokens)))
        return
    models = comma_choices(parser, "--models", args.models, MODELS, "model")
    prompts = [int(p) for p in args.prompts.split(",")]
    env = environment()
    results = []
    for name in models:
        for prompt in prompts:
            r = run_isolated(__file__, [name, str(prompt), "--tokens", str(args.tokens)], args.timeout)
            r.update({"model": name, "prompt": prompt})
            results.append(r)
            print(
                f"  {name:>11} prompt {prompt:>5}: {fmt_time(r.get('median_s'))} / token, "
                f"prefill {fmt_time(r.get('prefill_s'))} {r.get('skipped', '')}",
                file=sys.stderr,
                flush=True,
            )

    lines = [
        header("Generation, 125M presets, batch 1, float32", env, f"median of {args.tokens} tokens"),
        "",
        "| model | params | " + " | ".join(f"prompt {p}" for p in prompts) + " | per-token growth |",
        "|---|---|" + "---|" * (len(prompts) + 1),
    ]
    for name in models:
        row = {r["prompt"]: r for r in results if r["model"] == name}
        cells = [
            f"{fmt_time(row[p].get('median_s'))} (prefill {fmt_time(row[p].get('prefill_s'))})"
            for p in prompts
        ]
        timed = [float(row[p]["median_s"]) for p in prompts if "median_s" in row[p]]
        growth = f"{timed[-1] / timed[0]:.2f}× from {prompts[0]} to {prompts[-1]}" if len(timed) > 1 else ""
        params = next((r["parameters"] for r in row.values() if "parameters" in r), 0)
        lines.append(f"| {name} | {params / 1e6:.1f}M | " + " | ".join(cells) + f" | {growth} |")
    write_results("generation", env, results, "\n".join(lines))


if __name__ == "__main__":
    main()
