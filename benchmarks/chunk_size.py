"""Chunk-size sweep for ``mode="chunk"``: which default is fastest on the paper's shapes?

Question: forward+backward time of ``gate_loop(..., chunk_size=c)`` for c in a range, on M1
(multi-head, per-key complex a) and on S2 through the pure-PyTorch SISO path (the compiled SISO
kernel has no chunks), median of ``--repeats`` runs in one process. M1 runs twice: with gates
mostly near 1 (|a| = σ(α), α ~ N(2, 1)) and with gates that forget fast (α ~ N(0, 1), as trained
Memory Horizon models have them), where wide chunks exceed the factorised form's safe range and
take the exact path.

    python benchmarks/chunk_size.py
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from gateloop import gate_loop

from common import CASES, environment, header, make_op_inputs, median_time, prepare_worker, write_results

SWEEP_CASES = {  # label: (shape, mean of α in |a| = σ(α))
    "M1": ("M1", 2.0),
    "M1, fast-forgetting gates": ("M1", 0.0),
    "S2 (pure-PyTorch path)": ("S2", 2.0),
}


def time_chunk(case: str, gate_mean: float, chunk: int, repeats: int) -> float:
    q, k, v, log_a = make_op_inputs(CASES[case], per_head=False, requires_grad=True, gate_mean=gate_mean)

    def once() -> None:
        y, _ = gate_loop(q, k, v, log_a=log_a, chunk_size=chunk)
        y.backward(torch.ones_like(y))
        for t in (q, k, v, log_a):
            t.grad = None

    return statistics.median(median_time(once, repeats))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="16,32,64,128", help="comma list of chunk sizes")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ["GATELOOP_NO_EXTENSION"] = "1"  # S2 through the chunked path; M1 has no kernel
    prepare_worker()
    sizes = [int(s) for s in args.sizes.split(",")]
    env = environment()
    results = [
        {"case": label, "chunk_size": c, "median_s": time_chunk(case, gate_mean, c, args.repeats)}
        for label, (case, gate_mean) in SWEEP_CASES.items()
        for c in sizes
    ]
    lines = [
        header("chunk_size sweep, forward+backward, float32", env, f"median of {args.repeats}"),
        "",
        "| case | " + " | ".join(f"c={c}" for c in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for label in SWEEP_CASES:
        row = {r["chunk_size"]: r["median_s"] for r in results if r["case"] == label}
        lines.append(f"| {label} | " + " | ".join(f"{row[c] * 1e3:.0f} ms" for c in sizes) + " |")
    write_results("chunk_size", env, results, "\n".join(lines))


if __name__ == "__main__":
    main()
