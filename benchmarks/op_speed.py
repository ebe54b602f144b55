"""Operator speed: every mode of ``gate_loop`` vs lucidrains' ``gate_loop_operator``, and vs this
machine's ceilings.

Question: how long do forward and forward+backward take on the issue's shapes (M1 multi-head,
S2 the paper's SISO LM layer, S1 the Memory Horizon layer), how does that compare with the PyPI
package ``gateloop-transformer`` (``pip install -e ".[bench]"``) measured in the same run, and
what fraction of the machine's matmul throughput / memory bandwidth does the least work of the
recurrent form reach at that speed?

Each (case, implementation, pass) runs in a fresh process; times are medians of ``--repeats``.

    python benchmarks/op_speed.py
    python benchmarks/op_speed.py --cases S2 --impls chunk,chunk-pytorch,peer --repeats 9
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from common import (
    CASES,
    IMPLS,
    comma_choices,
    environment,
    fmt_time,
    header,
    infeasible,
    machine_ceilings,
    median_time,
    op_call,
    recurrent_minimum,
    run_isolated,
    write_results,
)

PASSES = ("fwd", "fwd+bwd")


def worker(case: str, impl: str, pass_: str, repeats: int) -> dict[str, object]:
    once = op_call(impl, CASES[case], pass_ == "fwd+bwd")
    times = median_time(once, repeats)
    return {"times_s": times, "median_s": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=",".join(CASES), help="comma list of " + ", ".join(CASES))
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma list of " + ", ".join(IMPLS))
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (median)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run before skipping")
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "IMPL", "PASS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, repeats=args.repeats)))
        return
    cases = comma_choices(parser, "--cases", args.cases, CASES, "case")
    impls = comma_choices(parser, "--impls", args.impls, IMPLS, "implementation")

    env = environment()
    ceilings = machine_ceilings()
    print(f"ceilings: {ceilings}", file=sys.stderr)
    results: list[dict[str, object]] = []
    for case in cases:
        shape = CASES[case]
        for impl in impls:
            for pass_ in PASSES:
                backward = pass_ == "fwd+bwd"
                reason = infeasible(impl, shape, backward)
                if reason:
                    r: dict[str, object] = {"skipped": reason}
                else:
                    r = run_isolated(
                        __file__, [case, impl, pass_, "--repeats", str(args.repeats)], args.timeout
                    )
                if "median_s" in r:
                    least = recurrent_minimum(
                        shape, per_head=impl in ("peer", "chunk-per-head-a"), backward=backward
                    )
                    t = float(r["median_s"])  # type: ignore[arg-type]
                    r["flop_fraction"] = least["flops"] / t / (ceilings["matmul_gflops"] * 1e9)
                    r["bandwidth_fraction"] = least["bytes"] / t / (ceilings["copy_gbps"] * 1e9)
                r.update({"case": case, "impl": impl, "pass": pass_, **shape})
                results.append(r)
                print(
                    f"  {case} {impl:>17} {pass_:>7}: {fmt_time(r.get('median_s'))} {r.get('skipped', '')}",
                    file=sys.stderr,
                    flush=True,
                )

    lines = [
        header("Op speed, float32", env, f"median of {args.repeats}")
        + f" Ceilings measured in the run: fp32 matmul {ceilings['matmul_gflops']:.0f} GFLOP/s, "
        f"copy bandwidth {ceilings['copy_gbps']:.1f} GB/s.",
        "",
        "| case | implementation | fwd | fwd+bwd | peer / ours (fwd+bwd) | fwd+bwd: FLOP / BW fraction |",
        "|---|---|---|---|---|---|",
    ]
    for case in cases:
        by = {(r["impl"], r["pass"]): r for r in results if r["case"] == case}
        peer = by.get(("peer", "fwd+bwd"), {})
        for impl in impls:
            f, fb = by[(impl, "fwd")], by[(impl, "fwd+bwd")]
            ratio = ""
            if impl != "peer" and "median_s" in peer and "median_s" in fb:
                ratio = f"{float(peer['median_s']) / float(fb['median_s']):.1f}×"  # type: ignore[arg-type]
            frac = ""
            if "flop_fraction" in fb:
                flop, bw = float(fb["flop_fraction"]), float(fb["bandwidth_fraction"])  # type: ignore[arg-type]
                frac = f"{100 * flop:.2f} % / {100 * bw:.1f} %"
            note = fb.get("skipped") or f.get("skipped") or ""
            lines.append(
                f"| {case} | {impl} | {fmt_time(f.get('median_s'))} | {fmt_time(fb.get('median_s'))} | "  # type: ignore[arg-type]
                f"{ratio or note} | {frac} |"
            )
    write_results(
        "op_speed", env, results, "\n".join(lines), ceilings=ceilings, cases={c: CASES[c] for c in cases}
    )


if __name__ == "__main__":
    main()
