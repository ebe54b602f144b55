"""Operator memory: peak memory of forward and forward+backward, every mode vs the peer.

Question: how much memory beyond its inputs does each implementation need on the issue's shapes
(M1, S2, S1), next to lucidrains' ``gate_loop_operator`` and next to the least any
implementation must hold (inputs, output and, for the backward, the gradients)?

Each (case, implementation, pass) runs in a fresh process with glibc told to ``mmap`` every
allocation of 64 KiB or more (``MALLOC_MMAP_THRESHOLD_=65536``), so that freed tensors leave the
resident set at once and it tracks the live tensors. After the inputs exist and one warm-up call
(which also loads the compiled kernel), the peak-RSS counter is reset (``/proc/self/clear_refs``);
the reported peak is the growth of the resident set over that baseline during one measured call
(Linux only).

    python benchmarks/op_memory.py
"""

from __future__ import annotations

import argparse
import json
import sys

from common import (
    CASES,
    IMPLS,
    TRACK_LIVE,
    comma_choices,
    environment,
    fmt_mib,
    header,
    infeasible,
    op_call,
    peak_rss_growth,
    run_isolated,
    write_results,
)

PASSES = ("fwd", "fwd+bwd")


def worker(case: str, impl: str, pass_: str) -> dict[str, object]:
    once = op_call(impl, CASES[case], pass_ == "fwd+bwd")
    once()  # warm-up: lazy imports, the compiled kernel, allocator state
    return {"peak_bytes": peak_rss_growth(once)}


def least_bytes(shape: dict[str, int], backward: bool) -> float:
    """Output y (float32), plus gradients the size of the inputs for the backward."""
    B, L, H, dk, dv = (shape[k] for k in ("B", "L", "H", "dk", "dv"))
    tokens = B * L * H
    out = tokens * dv * 4
    grads = tokens * (2 * dk + dv + 2 * dk) * 4 + tokens * dv * 4  # dq, dk, dv, d log_a, dy
    return out + (grads if backward else 0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=",".join(CASES), help="comma list of " + ", ".join(CASES))
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma list of " + ", ".join(IMPLS))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run before skipping")
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "IMPL", "PASS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    cases = comma_choices(parser, "--cases", args.cases, CASES, "case")
    impls = comma_choices(parser, "--impls", args.impls, IMPLS, "implementation")

    env = environment()
    results: list[dict[str, object]] = []
    for case in cases:
        for impl in impls:
            for pass_ in PASSES:
                reason = infeasible(impl, CASES[case], pass_ == "fwd+bwd")
                r = (
                    {"skipped": reason}
                    if reason
                    else run_isolated(__file__, [case, impl, pass_], args.timeout, env=TRACK_LIVE)
                )
                r.update({"case": case, "impl": impl, "pass": pass_, **CASES[case]})
                results.append(r)
                print(
                    f"  {case} {impl:>17} {pass_:>7}: {fmt_mib(r.get('peak_bytes'))} {r.get('skipped', '')}",
                    file=sys.stderr,
                    flush=True,
                )

    lines = [
        header("Op peak memory (resident-set growth during one call), float32", env),
        "",
        "| case | implementation | fwd | fwd+bwd | peer / ours (fwd+bwd) |",
        "|---|---|---|---|---|",
    ]
    for case in cases:
        by = {(r["impl"], r["pass"]): r for r in results if r["case"] == case}
        peer = by.get(("peer", "fwd+bwd"), {})
        for impl in impls:
            f, fb = by[(impl, "fwd")], by[(impl, "fwd+bwd")]
            ratio = ""
            if impl != "peer" and peer.get("peak_bytes") and fb.get("peak_bytes"):
                ratio = f"{float(peer['peak_bytes']) / float(fb['peak_bytes']):.1f}×"  # type: ignore[arg-type]
            note = fb.get("skipped") or f.get("skipped") or ""
            lines.append(
                f"| {case} | {impl} | {fmt_mib(f.get('peak_bytes'))} | {fmt_mib(fb.get('peak_bytes'))} | "  # type: ignore[arg-type]
                f"{ratio or note} |"
            )
        lines.append(
            f"| {case} | least possible (outputs + gradients) | {fmt_mib(least_bytes(CASES[case], False))} | "
            f"{fmt_mib(least_bytes(CASES[case], True))} | |"
        )
    write_results("op_memory", env, results, "\n".join(lines), cases={c: CASES[c] for c in cases})


if __name__ == "__main__":
    main()
