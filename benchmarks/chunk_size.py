"""Chunk-size sweep for ``mode="chunk"``: which default is fastest on the paper's shapes?

Question: forward+backward time of ``gate_loop(..., chunk_size=c)`` for c in a range, on M1
(multi-head, per-key complex a) and S2 (SISO), median of ``--repeats`` runs in one process.

    python benchmarks/chunk_size.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from op_speed import CASES, _make_inputs

from gateloop import gate_loop


def time_chunk(case: str, chunk: int, repeats: int) -> float:
    q, k, v, log_a = _make_inputs(CASES[case], per_head=False, requires_grad=True)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        y, _ = gate_loop(q, k, v, log_a=log_a, chunk_size=chunk)
        y.backward(torch.ones_like(y))
        if i:  # the first run warms up
            times.append(time.perf_counter() - start)
        for t in (q, k, v, log_a):
            t.grad = None
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="16,32,64,128", help="comma list of chunk sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="benchmarks/results/chunk_size.json")
    args = parser.parse_args()
    # why: decays drift into subnormals, which are ~100x slower on CPU (NUMERICS.md)
    torch.set_flush_denormal(True)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {case: {c: time_chunk(case, c, args.repeats) for c in sizes} for case in CASES}
    lines = [
        f"chunk_size sweep, fwd+bwd float32, {datetime.date.today()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}",
        "",
        "| case | " + " | ".join(f"c={c}" for c in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for case, row in results.items():
        lines.append(f"| {case} | " + " | ".join(f"{row[c] * 1e3:.0f} ms" for c in sizes) + " |")
    print("\n".join(lines))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"date": str(datetime.date.today()), "torch": torch.__version__, "results": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
