"""GPU operator speed: gate_loop's Triton backend vs its torch backend, fla's floor and the peer.

Forward and forward+backward time (median) and peak memory for the issue's shapes: M1 (B4 L2048
H8 d64, per-key complex transitions), S2 (the paper's LM layer: B4 L2048 H624 SISO), S-FEW (SISO
with few sequences x heads: B1 L32768 H64, where one program per row would leave most of the GPU
idle) and LONG (B1 L16384 H8 d64). Implementations:

  triton         gate_loop(backend="triton"): our SISO scan (dk = dv = 1; single pass or split
                 over chunks as the GPU's occupancy decides), fla-core behind the exact reduction
                 for dk > 1
  triton-1pass   our SISO scan forced to one pass per row (SISO cases only)
  triton-split   our SISO scan forced to split over chunks (SISO cases only)
  fla-reduction  gate_loop(backend="fla"): GateLoop reduced to fla's kernels everywhere
  torch          gate_loop(backend="torch"): the pure-PyTorch chunk path
  fla            the reduction's floor: fla's kernel alone on the already-doubled real problem
                 (chunk_gla for dk > 1, fused_recurrent_hgrn over 2H channels for SISO)
  peer           lucidrains' gate_loop_operator (gateloop-transformer==0.2.5), if installed

For S2 the table also gives the HBM floor of each path (its bytes counted by bytes_moved.py over
the GPU's bandwidth) and the time over that floor.

    python benchmarks/gpu_op_speed.py                          # on a GPU, full sizes
    python benchmarks/gpu_op_speed.py --device cpu --small     # runs end to end without a GPU
                                                               # (Triton under its interpreter)
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from common import (
    comma_choices,
    environment,
    fmt_mib,
    fmt_time,
    header,
    make_op_inputs,
    median_time,
    peer_operator,
    write_results,
)

FULL: dict[str, dict[str, int]] = {
    "M1": {"B": 4, "L": 2048, "H": 8, "dk": 64, "dv": 64},
    "S2": {"B": 4, "L": 2048, "H": 624, "dk": 1, "dv": 1},
    "S-FEW": {"B": 1, "L": 32768, "H": 64, "dk": 1, "dv": 1},
    "LONG": {"B": 1, "L": 16384, "H": 8, "dk": 64, "dv": 64},
}
SMALL: dict[str, dict[str, int]] = {  # --small: minutes under the CPU interpreter, not hours
    "M1": {"B": 1, "L": 128, "H": 2, "dk": 16, "dv": 16},
    "S2": {"B": 1, "L": 128, "H": 16, "dk": 1, "dv": 1},
    "S-FEW": {"B": 1, "L": 256, "H": 2, "dk": 1, "dv": 1},
    "LONG": {"B": 1, "L": 512, "H": 1, "dk": 16, "dv": 16},
}
IMPLS = ("triton", "triton-1pass", "triton-split", "fla-reduction", "torch", "fla", "peer")
SPLIT_POLICY = {"triton-1pass": False, "triton-split": True}  # forced split_over_chunks answers
BYTES_PATH = {"triton": "triton", "triton-split": "triton-split", "fla-reduction": "fla", "torch": "torch"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _fla_floor(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor) -> Callable[[], Tensor]:
    """fla's kernel on the doubled real problem, prepared outside the timed call."""
    phi = torch.remainder(torch.cumsum(log_a.imag.double(), dim=1), 2 * math.pi).float()  # (B, L, H, d)
    cos, sin = torch.cos(phi), torch.sin(phi)
    q2 = torch.cat([q * cos, -q * sin], dim=-1).detach().requires_grad_(q.requires_grad)  # (B, L, H, 2dk)
    k2 = torch.cat([k * cos, -k * sin], dim=-1).detach().requires_grad_(k.requires_grad)  # (B, L, H, 2dk)
    ell = log_a.real.float()
    g2 = torch.cat([ell, ell], dim=-1).detach().requires_grad_(log_a.requires_grad)  # (B, L, H, 2dk)
    vv = v.detach().requires_grad_(v.requires_grad)
    from gateloop.ops.triton._runtime import kernels

    kern = kernels()
    if q.shape[-1] == 1 and v.shape[-1] == 1:
        B, L, H, _ = q.shape
        x = (k2 * vv).reshape(B, L, 2 * H).detach().requires_grad_(v.requires_grad)  # (B, L, 2H)
        g = g2.reshape(B, L, 2 * H).detach().requires_grad_(log_a.requires_grad)
        return lambda: kern.fused_recurrent_hgrn(x, g)[0]
    return lambda: kern.chunk_gla(q2, k2, vv, g2, scale=1.0)[0]


def _call(
    impl: str, shape: dict[str, int], device: torch.device, backward: bool
) -> Callable[[], None] | None:
    q, k, v, log_a = (
        t.detach().to(device).requires_grad_(backward)
        for t in make_op_inputs(shape, per_head=impl == "peer", requires_grad=False)
    )
    siso = q.shape[-1] == 1 and v.shape[-1] == 1
    if impl in SPLIT_POLICY and not siso:
        return None
    if impl in ("triton", "torch", "fla-reduction", *SPLIT_POLICY):
        from gateloop import gate_loop

        backend = {"fla-reduction": "fla", **dict.fromkeys(SPLIT_POLICY, "triton")}.get(impl, impl)

        def run() -> Tensor:
            return gate_loop(q, k, v, log_a=log_a, backend=backend)[0]  # type: ignore[arg-type]
    elif impl == "fla":
        run = _fla_floor(q, k, v, log_a)
    else:
        try:
            op = peer_operator()
        except ImportError:
            return None

        def run() -> Tensor:
            return op(q, k, v, log_a)

    def once() -> None:
        y = run()
        if backward:
            y.backward(torch.ones_like(y))
        _sync(device)

    return once


@contextmanager
def split_policy(impl: str) -> Iterator[None]:
    """Force our SISO scan's single-pass / split choice for the ``triton-1pass``/``-split`` rows."""
    scan = importlib.import_module("gateloop.ops.triton.siso_scan")  # the module, not its function
    policy = scan.split_over_chunks
    if impl in SPLIT_POLICY:
        scan.split_over_chunks = lambda programs, device: SPLIT_POLICY[impl]
    try:
        yield
    finally:
        scan.split_over_chunks = policy


def measure(
    impl: str, shape: dict[str, int], device: torch.device, backward: bool, repeats: int
) -> dict[str, Any]:
    with split_policy(impl):
        return _measure(impl, shape, device, backward, repeats)


def _measure(
    impl: str, shape: dict[str, int], device: torch.device, backward: bool, repeats: int
) -> dict[str, Any]:
    once = _call(impl, shape, device, backward)
    if once is None:
        return {"skipped": "not installed" if impl == "peer" else "SISO cases only"}
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        once()
        peak = torch.cuda.max_memory_allocated() - base
    times = median_time(once, repeats, warmup=0 if peak is not None else 1)
    return {"seconds": statistics.median(times), "peak_bytes": peak}


def hbm_floors(device_name: str) -> dict[tuple[str, str, str], float]:
    """(case, impl, "forward"/"forward_backward") -> seconds at the HBM floor, from bytes_moved.py's
    results for this GPU model (empty when it has none for this GPU)."""
    path = Path(__file__).parent / "results" / "bytes_moved.json"
    gpu = next((g for g in ("H200", "H100") if g in device_name), None)
    if gpu is None or not path.exists():
        return {}
    by_path = {v: k for k, v in BYTES_PATH.items()}
    floors = {}
    for r in json.loads(path.read_text())["results"]:
        for impl in [by_path[r["path"]]] if r["path"] in by_path else []:
            for phase in ("forward", "forward_backward"):
                floors[(r["case"], impl, phase)] = r[phase]["floor_seconds"][gpu]
    return floors


def _over_floor(seconds: float | None, floor: float | None) -> str:
    return "-" if seconds is None or floor is None else f"{floor * 1e3:.3f} ms ({seconds / floor:.1f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--small", action="store_true", help="reduced sizes (for --device cpu)")
    parser.add_argument("--cases", default=",".join(FULL))
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 10 cuda, 1 cpu)")
    parser.add_argument("--name", default="gpu_op_speed", help="results file name (before suffixes)")
    args = parser.parse_args()
    sizes = SMALL if args.small else FULL
    cases = comma_choices(parser, "--cases", args.cases, sizes, "case")
    impls = comma_choices(parser, "--impls", args.impls, IMPLS, "implementation")
    device = torch.device(args.device)
    if device.type == "cpu":
        # the Triton kernels run under Triton's CPU interpreter: set before the kernels are loaded
        os.environ["TRITON_INTERPRET"] = "1"
    elif not torch.cuda.is_available():
        parser.error("--device cuda needs a GPU; use --device cpu --small to check the script without one")
    repeats = args.repeats or (10 if device.type == "cuda" else 1)
    floors = hbm_floors(torch.cuda.get_device_name() if device.type == "cuda" else "")
    results, rows = [], []
    for case in cases:
        shape = sizes[case]
        for impl in impls:
            fwd = measure(impl, shape, device, False, repeats)
            both = measure(impl, shape, device, True, repeats)
            floor = floors.get((case, impl, "forward_backward")) if shape == FULL.get(case) else None
            results.append(
                {"case": case, "shape": shape, "impl": impl, "forward": fwd, "forward_backward": both,
                 "hbm_floor_seconds_forward_backward": floor}
            )  # fmt: skip
            rows.append(
                f"| {case} | {impl} | {fmt_time(fwd.get('seconds'))} | {fmt_time(both.get('seconds'))} "
                f"| {_over_floor(both.get('seconds'), floor)} "
                f"| {fmt_mib(fwd.get('peak_bytes'))} | {fmt_mib(both.get('peak_bytes'))} |"
            )
    env = environment()
    env["device"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (Triton interpreter)"
    title = header(
        "gate_loop on a GPU: Triton backend vs torch, fla's floor and the peer", env, env["device"]
    )
    table = "\n".join(
        [
            title,
            "",
            "| case | impl | fwd | fwd+bwd | fwd+bwd HBM floor (time / floor) | peak fwd | peak fwd+bwd |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    name = (
        args.name + ("" if device.type == "cuda" else "_cpu_interpreter") + ("_small" if args.small else "")
    )
    write_results(name, env, results, table, sizes=sizes)


if __name__ == "__main__":
    main()
