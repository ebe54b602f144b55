"""Activation checkpointing: peak memory and time of one training step with and without it.

Question: how much memory does recomputing each block in the backward
(``--train.activation-checkpointing``) save on the paper's 125M GateLoop model (Table 4) at a
context of 2048, and what does it cost in time?

Each row runs in a fresh process with glibc's mmap threshold lowered so that the resident set
tracks live tensors (``common.TRACK_LIVE``); the reported peak is the resident-set growth over the
model and its inputs during one forward + loss + backward (after one warm-up step). Times are
single measured steps, so they mean something only on an otherwise idle machine.

    python benchmarks/activation_memory.py                    # 125M, L 2048, batch 1
    python benchmarks/activation_memory.py --preset cpu --seq-len 256
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from common import (
    TRACK_LIVE,
    environment,
    fmt_mib,
    fmt_time,
    header,
    peak_rss_growth,
    prepare_worker,
    run_isolated,
    write_results,
)

MODES = ("plain", "checkpointed")


def worker(preset: str, seq_len: int, batch: int, mode: str) -> dict[str, object]:
    from gateloop.experiments.language_model import PRESETS
    from gateloop.models.registry import build_model
    from gateloop.training.activation_checkpointing import apply_activation_checkpointing

    prepare_worker()
    torch.manual_seed(0)
    model = build_model(PRESETS[preset].model)
    if mode == "checkpointed":
        apply_activation_checkpointing(model)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len + 1))

    def step() -> None:
        logits = model(ids[:, :-1])  # (B, L, V)
        F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up: lazy imports, the compiled kernel, allocator state
    start = time.perf_counter()
    peak = peak_rss_growth(step)
    return {"peak_bytes": peak, "seconds": time.perf_counter() - start, "parameters": model.num_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="wikitext103_125m", help="LM preset (language_model.PRESETS)")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--worker", nargs=4, metavar=("PRESET", "L", "B", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        preset, seq_len, batch, mode = args.worker
        print(json.dumps(worker(preset, int(seq_len), int(batch), mode)))
        return
    env = environment()
    results = []
    for mode in MODES:
        worker_args = [args.preset, str(args.seq_len), str(args.batch), mode]
        r = run_isolated(__file__, worker_args, args.timeout, env=TRACK_LIVE)
        r.update({"preset": args.preset, "seq_len": args.seq_len, "batch": args.batch, "mode": mode})
        results.append(r)
        print(f"  {mode}: {fmt_mib(r.get('peak_bytes'))} {r.get('skipped', '')}", file=sys.stderr, flush=True)
    plain, ckpt = results
    ratio = ""
    if plain.get("peak_bytes") and ckpt.get("peak_bytes"):
        ratio = f"{plain['peak_bytes'] / ckpt['peak_bytes']:.1f}× less memory"  # type: ignore[operator]
    lines = [
        header(f"One training step, {args.preset} (batch {args.batch}, L {args.seq_len}), float32", env),
        "",
        "| activation checkpointing | peak memory (RSS growth) | step time |",
        "|---|---|---|",
        *(
            f"| {r['mode']} | {fmt_mib(r.get('peak_bytes'))} | {fmt_time(r.get('seconds'))} |"  # type: ignore[arg-type]
            for r in results
        ),
        "",
        ratio,
    ]
    write_results("activation_memory", env, results, "\n".join(lines))


if __name__ == "__main__":
    main()
