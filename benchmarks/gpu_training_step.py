"""GPU training step and generation: the 125M paper model vs the parameter-matched Transformer.

Questions (issue targets, benchmark not test):
1. Training tokens/s of a step (forward, loss, backward, AdamW; bfloat16 autocast on CUDA) of the
   paper's 125M GateLoop LM (Table 4: 12 layers, d_model 624, SISO heads; the Triton backend on
   CUDA) vs a Transformer (SDPA) with the same parameter count, at L = 1024 and 2048 with the same
   tokens per step. Target: GateLoop's tokens/s >= the Transformer's at L 2048.
2. Generation: time per new token (batch 1, greedy, cached steps) after a prompt.

Each row runs in a fresh process; times are medians of ``--repeats`` steps after one warm-up, with
the device synchronised around each. Peak memory is CUDA's allocator peak for one step.

    python benchmarks/gpu_training_step.py                         # on a GPU: the 125M models
    python benchmarks/gpu_training_step.py --device cpu --small    # end to end without a GPU
                                                                   # (the cpu preset's model, short L)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from common import (
    comma_choices,
    environment,
    fmt_mib,
    fmt_time,
    header,
    prepare_worker,
    run_isolated,
    write_results,
)

MODELS = ("gateloop", "transformer")
FULL = {"preset": "wikitext103_125m", "lengths": (1024, 2048), "tokens_per_step": 16384, "prompt": 512}
SMALL = {"preset": "cpu", "lengths": (128, 256), "tokens_per_step": 1024, "prompt": 64}


def _model(sizes: dict[str, Any], name: str, device: torch.device) -> torch.nn.Module:
    from gateloop.experiments.language_model import preset
    from gateloop.models.registry import build_model

    torch.manual_seed(0)
    # GPT-2's vocabulary, as the paper's WikiText-103 runs (the cpu preset's data decides its own)
    run = preset(sizes["preset"], name, {"model.vocab_size": 50257}, match_parameters=name != "gateloop")
    return build_model(run.model).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_worker(
    sizes: dict[str, Any], name: str, length: int, device: torch.device, repeats: int
) -> dict[str, Any]:
    prepare_worker()
    model = _model(sizes, name, device).train()
    rows = sizes["tokens_per_step"] // length
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50257, (rows, length + 1), generator=g).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # why bf16 autocast on CUDA: how both models are trained on GPUs (fp32 on the CPU)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step() -> None:
        with autocast:
            logits = model(ids[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)

    step()  # warm-up (Triton compiles its kernels here)
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step()
        peak = torch.cuda.max_memory_allocated()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "rows": rows,
        "times_s": times,
        "median_s": median,
        "tokens_per_s": rows * length / median,
        "peak_bytes": peak,
    }


def generation_worker(sizes: dict[str, Any], name: str, device: torch.device, tokens: int) -> dict[str, Any]:
    prepare_worker()
    model = _model(sizes, name, device).eval()
    ids = torch.randint(0, 50257, (1, sizes["prompt"]), generator=torch.Generator().manual_seed(2)).to(device)
    steps = []
    with torch.no_grad():
        logits, state = model(ids, return_state=True)
        token = logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(tokens + 1):
            _sync(device)
            start = time.perf_counter()
            logits, state = model(token, state=state, return_state=True)
            token = logits[:, -1].argmax(-1, keepdim=True)
            _sync(device)
            steps.append(time.perf_counter() - start)
    steps = steps[1:]  # the first step warms up
    return {"step_times_s": steps, "median_s": statistics.median(steps)}


def _training_table(sizes: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | params | batch × L | step | tokens/s | peak memory | GateLoop / Transformer tokens/s |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {(r["model"], r["L"]): r for r in results if r["kind"] == "train"}
    for (name, length), r in by.items():
        other = by.get(("transformer", length), {})
        ratio = ""
        if name == "gateloop" and r.get("tokens_per_s") and other.get("tokens_per_s"):
            ratio = f"{r['tokens_per_s'] / other['tokens_per_s']:.2f}"
        rows = sizes["tokens_per_step"] // length
        cells = [
            name,
            f"{r.get('parameters', 0) / 1e6:.1f}M",
            f"{rows} × {length}",
            fmt_time(r.get("median_s")),
            f"{r.get('tokens_per_s', 0):,.0f}",
            fmt_mib(r.get("peak_bytes")),
            ratio or r.get("skipped", ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument(
        "--small", action="store_true", help="the cpu preset's model and short L (for --device cpu)"
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 10 cuda, 2 cpu)")
    parser.add_argument("--tokens", type=int, default=32, help="timed generated tokens (median)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = SMALL if args.small else FULL
    device = torch.device(args.device)
    repeats = args.repeats or (10 if device.type == "cuda" else 2)
    if args.worker:
        job = json.loads(args.worker)
        if job["kind"] == "train":
            out = train_worker(sizes, job["model"], job["L"], device, repeats)
        else:
            out = generation_worker(sizes, job["model"], device, args.tokens)
        print(json.dumps(out))
        return
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a GPU; use --device cpu --small to check the script without one")
    models = comma_choices(parser, "--models", args.models, MODELS, "model")
    jobs = [{"kind": "train", "model": m, "L": length} for length in sizes["lengths"] for m in models]
    jobs += [{"kind": "generate", "model": m} for m in models]
    passthrough = ["--device", args.device, "--repeats", str(repeats), "--tokens", str(args.tokens)]
    results = []
    for job in jobs:
        r = run_isolated(
            __file__, [json.dumps(job), *passthrough, *(["--small"] if args.small else [])], args.timeout
        )
        results.append({**job, **r})
        print(
            f"  {json.dumps(job)}: {fmt_time(r.get('median_s'))} {r.get('skipped', '')}",
            file=sys.stderr,
            flush=True,
        )
    env = environment()
    env["device"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    generation = [
        f"| {r['model']} | prompt {sizes['prompt']} | {fmt_time(r.get('median_s'))} / token "
        f"{r.get('skipped', '')} |"
        for r in results
        if r["kind"] == "generate"
    ]
    table = "\n".join(
        [
            header(f"Training step and generation, {sizes['preset']} models", env, env["device"]),
            "",
            *_training_table(sizes, results),
            "",
            "| model | generation | time |",
            "|---|---|---|",
            *generation,
        ]
    )
    name = "gpu_training_step" + ("" if device.type == "cuda" else "_cpu") + ("_small" if args.small else "")
    write_results(name, env, results, table, sizes=sizes)


if __name__ == "__main__":
    main()
