"""Scaling with sequence length: time of forward+backward from L = 256 to 16384, every mode.

Question: does the chunked mode cost O(L) (linear) while the surrogate attention modes cost
O(L²), and where does each mode and lucidrains' ``gate_loop_operator`` stand as L grows? Shape:
B = 1, H = 8, dk = dv = 16, one complex transition per head (the peer's problem). Each point runs in
a fresh process (median of ``--repeats``); a mode stops growing L once a point would exceed the
memory limit or took longer than ``--max-seconds``. Writes a log-log PNG of time vs L.

    python benchmarks/scaling.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from common import (
    RESULTS,
    comma_choices,
    environment,
    fmt_time,
    header,
    infeasible,
    median_time,
    op_call,
    run_isolated,
    write_results,
)

MODES = ("chunk", "recurrent", "scan", "attention", "softmax", "peer")
LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384)
SHAPE = {"B": 1, "H": 8, "dk": 16, "dv": 16}


def worker(mode: str, L: int, repeats: int) -> dict[str, object]:
    impl = "chunk-per-head-a" if mode == "chunk" else mode
    times = median_time(op_call(impl, {**SHAPE, "L": L}, True), repeats)
    return {"times_s": times, "median_s": statistics.median(times)}


def plot(results: list[dict[str, object]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for mode in MODES:
        points = [(r["L"], r["median_s"]) for r in results if r["mode"] == mode and "median_s" in r]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.loglog(xs, ys, marker="o", label=mode if mode != "peer" else "gateloop-transformer (peer)")
    ref = [r for r in results if r["mode"] == "chunk" and "median_s" in r]
    if ref:  # guide lines through the first chunk point: slope 1 (linear) and 2 (quadratic)
        x0, y0 = float(ref[0]["L"]), float(ref[0]["median_s"])  # type: ignore[arg-type]
        xs = [float(L) for L in LENGTHS]
        ax.loglog(xs, [y0 * (x / x0) for x in xs], "k:", lw=0.8, label="∝ L")
        ax.loglog(xs, [y0 * (x / x0) ** 2 for x in xs], "k--", lw=0.8, label="∝ L²")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("forward + backward time (s)")
    ax.set_title(f"GateLoop op, B={SHAPE['B']} H={SHAPE['H']} dk=dv={SHAPE['dk']}, float32, CPU")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", default=",".join(MODES), help="comma list of " + ", ".join(MODES))
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="comma list of L")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=30.0, help="stop growing L for a mode past this")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "L"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.repeats)))
        return
    modes = comma_choices(parser, "--modes", args.modes, MODES, "mode")
    lengths = [int(x) for x in args.lengths.split(",")]

    env = environment()
    results: list[dict[str, object]] = []
    for mode in modes:
        stop = None
        for L in lengths:
            impl = "chunk-per-head-a" if mode == "chunk" else mode
            reason = stop or infeasible(impl, {**SHAPE, "L": L}, True)
            if reason:
                r: dict[str, object] = {"skipped": reason}
            else:
                r = run_isolated(
                    __file__, [mode, str(L), "--repeats", str(args.repeats)], 20 * args.max_seconds
                )
            r.update({"mode": mode, "L": L})
            results.append(r)
            print(
                f"  {mode:>9} L={L:>5}: {fmt_time(r.get('median_s'))} {r.get('skipped', '')}", file=sys.stderr
            )  # type: ignore[arg-type]
            if "skipped" in r and not stop:
                stop = "skipped: a shorter L was already infeasible"
            elif float(r.get("median_s", 0.0)) > args.max_seconds:  # type: ignore[arg-type]
                stop = f"skipped: L={L} already took > {args.max_seconds:.0f} s"

    png = RESULTS / "scaling.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(results, str(png))
    lines = [
        header("Forward+backward time vs L, float32", env, f"B=1 H=8 dk=dv=16, median of {args.repeats}"),
        "",
        "| mode | " + " | ".join(f"L={L}" for L in lengths) + " | time(L_max) / time(L_min) |",
        "|---|" + "---|" * (len(lengths) + 1),
    ]
    for mode in modes:
        row = {r["L"]: r for r in results if r["mode"] == mode}
        cells = [fmt_time(row[L].get("median_s")) for L in lengths]  # type: ignore[arg-type]
        timed = [(L, float(row[L]["median_s"])) for L in lengths if "median_s" in row[L]]  # type: ignore[arg-type]
        growth = ""
        if len(timed) > 1:
            (l0, t0), (l1, t1) = timed[0], timed[-1]
            growth = f"{t1 / t0:.0f}× for {l1 // l0}× L"
        lines.append(f"| {mode} | " + " | ".join(cells) + f" | {growth} |")
    lines.append(f"\nPlot: `{png.relative_to(RESULTS.parent)}`.")
    write_results("scaling", env, results, "\n".join(lines), shape=SHAPE, plot=str(png.name))


if __name__ == "__main__":
    main()
