"""Shared benchmark plumbing: shapes, inputs, the peer operator, timing, machine ceilings, output.

Every script in this folder answers one question, prints a markdown table and writes JSON under
``benchmarks/results/``. Measurements that need their own peak-memory reading run in a fresh
subprocess (``run_isolated``); times are medians after a warm-up.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gateloop.machine import cpu_name

RESULTS = Path(__file__).resolve().parent / "results"

# The shapes. M1: multi-head with per-key complex transitions; S2: the paper's LM layer
# (H = d_model = 624 SISO heads); S1: the Memory Horizon layer (64 SISO heads).
CASES: dict[str, dict[str, int]] = {
    "M1": {"B": 4, "L": 2048, "H": 8, "dk": 64, "dv": 64},
    "S2": {"B": 4, "L": 2048, "H": 624, "dk": 1, "dv": 1},
    "S1": {"B": 8, "L": 1024, "H": 64, "dk": 1, "dv": 1},
}


def environment() -> dict[str, Any]:
    """What a reader needs to compare a table with their own machine."""
    return {
        "date": str(datetime.date.today()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "python": platform.python_version(),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }


def header(title: str, env: dict[str, Any], extra: str = "") -> str:
    return (
        f"{title}, {env['date']}, torch {env['torch']}, {env['threads']} threads, {env['cpu']}"
        + (f"; {extra}" if extra else "")
        + "."
    )


def median_time(
    fn: Callable[[], object], repeats: int, *, warmup: int = 1, slow_s: float = 5.0
) -> list[float]:
    """``repeats`` timed calls after ``warmup`` untimed ones; a warm-up slower than ``slow_s``
    counts as a run (slow cases would otherwise take minutes per row)."""
    times: list[float] = []
    for _ in range(warmup):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        if elapsed > slow_s:
            times.append(elapsed)
    while len(times) < repeats:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def machine_ceilings(repeats: int = 5) -> dict[str, float]:
    """fp32 matmul throughput (torch.mm, 2048²) and memory bandwidth (a 256 MiB copy: bytes read
    plus bytes written per second), medians, with torch's current thread count."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    mm = statistics.median(median_time(lambda: torch.mm(a, b, out=out), repeats))
    src = torch.randn(64 * 2**20)  # 256 MiB of float32
    dst = torch.empty_like(src)
    copy = statistics.median(median_time(lambda: dst.copy_(src), repeats))
    return {"matmul_gflops": 2 * n**3 / mm / 1e9, "copy_gbps": 2 * src.numel() * 4 / copy / 1e9}


def make_op_inputs(
    shape: dict[str, int], *, per_head: bool, requires_grad: bool, seed: int = 0, gate_mean: float = 2.0
) -> list[Tensor]:
    """q, k, v and a complex log_a as a trained layer produces them: |a| = σ(α), α ~ N(2, 1),
    mostly near 1 (``gate_mean`` moves α's mean: 0 gives gates that forget fast); phases ~ N(0, 0.1²)."""
    g = torch.Generator().manual_seed(seed)
    B, L, H, dk, dv = (shape[k] for k in ("B", "L", "H", "dk", "dv"))
    q = torch.randn(B, L, H, dk, generator=g)
    k = torch.randn(B, L, H, dk, generator=g) / math.sqrt(dk)
    v = torch.randn(B, L, H, dv, generator=g)
    d = 1 if per_head else dk
    alpha = torch.randn(B, L, H, d, generator=g) + gate_mean
    log_a = torch.complex(torch.nn.functional.logsigmoid(alpha), 0.1 * torch.randn(B, L, H, d, generator=g))
    tensors = [q, k, v, log_a]
    for t in tensors:
        t.requires_grad_(requires_grad)
    return tensors


def peer_operator() -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """lucidrains' ``gate_loop_operator`` (``pip install gateloop-transformer==0.2.5``) behind our
    layout: q, k [B, L, H, dk], v [B, L, H, dv], log_a [B, L, H, 1] (it takes one complex
    transition per head) -> y [B, L, H, dv] = Re(q h), the same quantity as ``gate_loop``."""
    from gateloop_transformer.gateloop_transformer import gate_loop_operator

    def run(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor) -> Tensor:
        B, L, H, _ = q.shape

        def heads_first(t: Tensor) -> Tensor:  # (B, L, H, d) -> ((B H), L, d)
            return t.permute(0, 2, 1, 3).reshape(B * H, L, -1)

        a = torch.exp(log_a).permute(0, 2, 1, 3).reshape(B * H, L, 1, 1)  # its API takes a itself
        y = gate_loop_operator(heads_first(q), heads_first(k), heads_first(v), a)  # ((B H), L, dv)
        return y.view(B, H, L, -1).permute(0, 2, 1, 3)

    return run


def recurrent_minimum(shape: dict[str, int], *, per_head: bool, backward: bool) -> dict[str, float]:
    """Least work any exact implementation must do, from the recurrent form (float32).

    FLOPs: per token and head, the state update a ⊙ h + kᵀv on a complex dk x dv state (complex
    multiply 6, outer product 1, add 1 = 8 per entry) and the readout Re(q h) (2 per entry); the
    backward costs twice the forward. Bytes: every input read once (complex log_a as 2 floats) and y
    written once; the backward reads the inputs and dy and writes every gradient.
    """
    B, L, H, dk, dv = (shape[k] for k in ("B", "L", "H", "dk", "dv"))
    tokens = B * L * H
    flops = 10.0 * tokens * dk * dv
    inputs = tokens * (2 * dk + dv + 2 * (1 if per_head else dk))  # q, k, v, log_a (floats)
    io = inputs + tokens * dv  # + y
    if backward:
        flops *= 3
        io += inputs + tokens * dv + inputs  # reads inputs and dy, writes the gradients
    return {"flops": flops, "bytes": 4.0 * io}


def run_isolated(
    script: str, args: list[str], timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``python script --worker ...args`` in a fresh process (with ``env`` added to the
    environment); its last stdout line is JSON."""
    cmd = [sys.executable, script, "--worker", *args]
    try:
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["?"]
        return {"skipped": f"failed: {tail[0][:160]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# every allocation of 64 KiB or more is its own mmap: freed memory leaves the resident set at once,
# so the resident set tracks the live tensors
TRACK_LIVE = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match, f"{field} missing from /proc/self/status"
    return int(match.group(1))


def peak_rss_growth(once: Callable[[], object]) -> int:
    """Bytes the resident set grows by at its peak during one call of ``once`` (Linux; run the
    process with ``TRACK_LIVE`` in its environment)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    baseline = _status_kib("VmRSS")
    once()
    return max(_status_kib("VmHWM") - baseline, 0) * 1024


def comma_choices(
    parser: argparse.ArgumentParser, flag: str, value: str, allowed: Iterable[str], noun: str
) -> list[str]:
    """The comma list ``value`` given for ``flag``, each item checked against ``allowed``."""
    allowed = list(allowed)
    names = value.split(",")
    for name in names:
        if name not in allowed:
            parser.error(f"{flag}: unknown {noun} {name!r}; choose from {', '.join(allowed)}")
    return names


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_mib(n_bytes: float | None) -> str:
    return "—" if n_bytes is None else f"{n_bytes / 2**20:.0f} MiB"


def write_results(
    name: str, env: dict[str, Any], results: list[dict[str, Any]], table: str, **extra: Any
) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"meta": env, **extra, "results": results, "table": table}, indent=2) + "\n")
    print(table)
    print(f"\nwrote {path}", file=sys.stderr)
    return path


# Implementations of the operator the op benchmarks compare. "chunk-pytorch" is the default
# mode with the compiled kernels disabled (it differs from "chunk" only for SISO shapes);
# "chunk-per-head-a" is ours on the peer's problem (one transition per head).
IMPLS = ("chunk", "chunk-pytorch", "chunk-per-head-a", "recurrent", "scan", "attention", "softmax", "peer")
MEMORY_LIMIT = 12e9  # bytes a run may plausibly need on a 24 GiB machine before it is skipped


def infeasible(impl: str, shape: dict[str, int], backward: bool) -> str | None:
    """Reason to skip a run whose intermediates cannot fit, else None."""
    B, L, H, dk, dv = (shape[k] for k in ("B", "L", "H", "dk", "dv"))
    if impl == "chunk-pytorch" and (dk, dv) != (1, 1):
        return "same as chunk (no compiled kernel for dk > 1)"
    if impl in ("attention", "softmax"):
        # complex (L, L, dk) decays, about three live at once (S1 forward at a 1x estimate of
        # 8.6 GB was killed for memory on a 24 GiB machine)
        need = B * H * L * L * dk * 16 * 3
        if need > MEMORY_LIMIT:
            return f"skipped: O(L² dk) decays need ~{need / 1e9:.0f} GB"
    if impl == "scan":
        levels = math.ceil(math.log2(L)) if backward else 3  # rounds kept alive
        need = B * L * H * dk * dv * 8 * levels  # complex64 state per round
        if need > MEMORY_LIMIT:
            return f"skipped: the scan materialises (B, L, H, dk, dv) per round, ~{need / 1e9:.0f} GB"
    return None


def prepare_worker() -> None:
    """Set-up every measuring process does before its first timed call."""
    from gateloop.ops._extension import load_extension

    # why: decays drift into subnormals, ~100x slower on CPU (docs/numerics.md, 'Subnormals on the CPU')
    torch.set_flush_denormal(True)
    # build/load the compiled SISO kernel now, so a first-use build (~25 s) never lands in a timed
    # call (a slow warm-up counts as a run); a no-op under GATELOOP_NO_EXTENSION
    load_extension("siso_scan.cpp")


def op_call(impl: str, shape: dict[str, int], backward: bool) -> Callable[[], None]:
    """One forward (no grad) or forward+backward of ``impl`` on fresh inputs of ``shape``."""
    if impl == "chunk-pytorch":
        os.environ["GATELOOP_NO_EXTENSION"] = "1"  # this process only (workers are fresh)
    prepare_worker()
    per_head = impl in ("peer", "chunk-per-head-a")
    q, k, v, log_a = make_op_inputs(shape, per_head=per_head, requires_grad=backward)
    if impl == "peer":
        peer = peer_operator()

        def run() -> Tensor:
            return peer(q, k, v, log_a)
    else:
        from gateloop import gate_loop

        mode = "chunk" if impl.startswith("chunk") else impl

        def run() -> Tensor:
            return gate_loop(q, k, v, log_a=log_a, mode=mode)[0]  # type: ignore[arg-type]

    def once() -> None:
        if backward:
            y = run()
            y.backward(torch.ones_like(y))
            for t in (q, k, v, log_a):
                t.grad = None
        else:
            with torch.no_grad():
                run()

    return once
