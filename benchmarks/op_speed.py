"""Operator speed and peak memory: every mode of ``gate_loop`` vs lucidrains' ``gate_loop_operator``.

Question: how long do forward and forward+backward of each mode take on the paper's shapes, how
much memory do they need, and how do they compare with the PyPI package ``gateloop-transformer``
(``pip install gateloop-transformer==0.2.5``; its operator takes one complex transition per head)
measured side by side in the same run?

Each (case, implementation, pass) runs in a fresh subprocess: the peak memory reported is the
growth of that process's max RSS over its baseline after the inputs exist. Times are medians of
``--repeats`` runs after one warm-up (a warm-up slower than 5 s counts as a run).

    python benchmarks/op_speed.py                       # all cases, all modes, peer
    python benchmarks/op_speed.py --cases M1 --modes chunk --repeats 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES: dict[str, dict[str, int]] = {
    # multi-head: per-key complex transitions (the peer gets its per-head scalar a)
    "M1": {"B": 4, "L": 2048, "H": 8, "dk": 64, "dv": 64},
    # SISO, the paper's LM layer: H = d_model = 624, 1x1 states
    "S2": {"B": 4, "L": 2048, "H": 624, "dk": 1, "dv": 1},
}
IMPLS = ("chunk", "chunk-per-head-a", "recurrent", "scan", "attention", "softmax", "peer")
PASSES = ("fwd", "fwd+bwd")
MEMORY_LIMIT = 12e9  # bytes a run may plausibly need on this 24 GiB machine before it is skipped


def feasibility(impl: str, shape: dict[str, int], pass_: str) -> str | None:
    """Reason to skip a run whose intermediates cannot fit, else None."""
    B, L, H, dk, dv = (shape[k] for k in ("B", "L", "H", "dk", "dv"))
    if impl in ("attention", "softmax"):
        need = B * H * L * L * dk * 16 * (3 if pass_ == "fwd+bwd" else 1)  # complex (L, L, dk) decays
        if need > MEMORY_LIMIT:
            return f"skipped: O(L² dk) decays need ~{need / 1e9:.0f} GB"
    if impl == "scan":
        levels = math.ceil(math.log2(L)) if pass_ == "fwd+bwd" else 3  # rounds kept alive
        need = B * L * H * dk * dv * 8 * levels  # complex64 state per round
        if need > MEMORY_LIMIT:
            return f"skipped: the scan materialises (B, L, H, dk, dv) per round, ~{need / 1e9:.0f} GB"
    return None


def _make_inputs(shape: dict[str, int], per_head: bool, requires_grad: bool):
    import torch

    g = torch.Generator().manual_seed(0)
    B, L, H, dk, dv = (shape[k] for k in ("B", "L", "H", "dk", "dv"))
    q = torch.randn(B, L, H, dk, generator=g)
    k = torch.randn(B, L, H, dk, generator=g) / math.sqrt(dk)
    v = torch.randn(B, L, H, dv, generator=g)
    d = 1 if per_head else dk
    # gates as a trained layer produces them: |a| = σ(α) mostly near 1, small phases
    alpha = torch.randn(B, L, H, d, generator=g) + 2.0
    log_a = torch.complex(torch.nn.functional.logsigmoid(alpha), 0.1 * torch.randn(B, L, H, d, generator=g))
    tensors = [q, k, v, log_a]
    for t in tensors:
        t.requires_grad_(requires_grad)
    return tensors


def worker(case: str, impl: str, pass_: str, repeats: int) -> dict[str, object]:
    import torch

    # why: decays drift into subnormals, which are ~100x slower on CPU (NUMERICS.md)
    torch.set_flush_denormal(True)
    shape = CASES[case]
    backward = pass_ == "fwd+bwd"
    per_head = impl in ("peer", "chunk-per-head-a")
    q, k, v, log_a = _make_inputs(shape, per_head=per_head, requires_grad=backward)

    if impl == "peer":
        from gateloop_transformer.gateloop_transformer import gate_loop_operator

        B, L, H = shape["B"], shape["L"], shape["H"]

        def heads_first(t: torch.Tensor) -> torch.Tensor:  # (B, L, H, d) -> ((B H), L, d)
            return t.permute(0, 2, 1, 3).reshape(B * H, L, -1)

        def run() -> torch.Tensor:
            a = torch.exp(log_a)  # its API takes a itself: ((B H), L, 1, 1) complex
            a = a.permute(0, 2, 1, 3).reshape(B * H, L, 1, 1)
            return gate_loop_operator(heads_first(q), heads_first(k), heads_first(v), a)
    else:
        from gateloop import gate_loop

        mode = "chunk" if impl.startswith("chunk") else impl

        def run() -> torch.Tensor:
            return gate_loop(q, k, v, log_a=log_a, mode=mode)[0]

    def once() -> float:
        start = time.perf_counter()
        if backward:
            y = run()
            y.backward(torch.ones_like(y))
            for t in (q, k, v, log_a):
                t.grad = None
        else:
            with torch.no_grad():
                run()
        return time.perf_counter() - start

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    warm = once()
    if warm > 5.0:
        times.append(warm)
    while len(times) < repeats:
        times.append(once())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"times_s": times, "median_s": statistics.median(times), "peak_bytes": max(peak - baseline, 0)}


def _run_subprocess(case: str, impl: str, pass_: str, repeats: int, timeout: float) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--worker", case, impl, pass_, "--repeats", str(repeats)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["?"]
        return {"skipped": f"failed: {tail[0][:120]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt_time(r: dict[str, object]) -> str:
    if "skipped" in r:
        return "—"
    t = float(r["median_s"])  # type: ignore[arg-type]
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def _fmt_mem(r: dict[str, object]) -> str:
    return "—" if "skipped" in r else f"{int(r['peak_bytes']) / 2**20:.0f} MiB"  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=",".join(CASES), help="comma list of " + ", ".join(CASES))
    parser.add_argument("--modes", default=",".join(IMPLS), help="comma list of " + ", ".join(IMPLS))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run before skipping")
    parser.add_argument("--json", default="benchmarks/results/op_speed.json", help="where to write results")
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "IMPL", "PASS"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(*args.worker, repeats=args.repeats)))
        return

    import torch

    cases = [c for c in args.cases.split(",") if c]
    impls = [m for m in args.modes.split(",") if m]
    for name in cases:
        if name not in CASES:
            parser.error(f"--cases: unknown case {name!r}; choose from {', '.join(CASES)}")
    for name in impls:
        if name not in IMPLS:
            parser.error(f"--modes: unknown implementation {name!r}; choose from {', '.join(IMPLS)}")

    results: list[dict[str, object]] = []
    for case in cases:
        shape = CASES[case]
        for impl in impls:
            for pass_ in PASSES:
                reason = feasibility(impl, shape, pass_)
                if reason:
                    r: dict[str, object] = {"skipped": reason}
                else:
                    r = _run_subprocess(case, impl, pass_, args.repeats, args.timeout)
                r.update({"case": case, "impl": impl, "pass": pass_, **shape})
                results.append(r)
                status = f"{_fmt_time(r):>9} {_fmt_mem(r):>9} {r.get('skipped', '')}"
                print(f"  {case} {impl:>17} {pass_:>7}: {status}", file=sys.stderr, flush=True)

    lines = [
        f"Op speed, float32, {datetime.date.today()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"median of {args.repeats}.",
        "",
        "| case | implementation | fwd | fwd mem | fwd+bwd | fwd+bwd mem | peer / ours (fwd+bwd) |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        by = {(r["impl"], r["pass"]): r for r in results if r["case"] == case}
        peer = by.get(("peer", "fwd+bwd"))
        for impl in impls:
            f, fb = by[(impl, "fwd")], by[(impl, "fwd+bwd")]
            ratio = ""
            if impl != "peer" and peer and "skipped" not in peer and "skipped" not in fb:
                ratio = f"{float(peer['median_s']) / float(fb['median_s']):.1f}×"  # type: ignore[arg-type]
            note = fb.get("skipped") or f.get("skipped") or ""
            lines.append(
                f"| {case} | {impl} | {_fmt_time(f)} | {_fmt_mem(f)} | {_fmt_time(fb)} | {_fmt_mem(fb)} | "
                f"{ratio or note} |"
            )
    table = "\n".join(lines)
    print(table)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": str(datetime.date.today()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "cases": {c: CASES[c] for c in cases},
    }
    out.write_text(json.dumps({"meta": meta, "results": results, "table": table}, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
