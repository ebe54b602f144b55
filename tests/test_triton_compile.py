"""Tier B: the Triton launches of the backend compile for sm_80 and sm_90 and fit shared memory.

Representative calls run under the interpreter while their launches are recorded
(``triton_launches.recording``); a fresh process without the interpreter compiles each launch for
an A100 and an H100 target with the pinned Triton (no GPU needed) and reports its shared memory.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton_interpret  # noqa: F401  (sets TRITON_INTERPRET before any kernel import)
from triton_launches import recording

from gateloop import gate_loop

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="tier C runs the kernels on this GPU")
pytest.importorskip("triton")
pytest.importorskip("fla")

# (dk, per_head, dtype, mode, packed, backend): doubled per-key keys at dk = 64 and 128 (K = 128,
# 256), per-head, SISO on our scan and on fla's HGRN over 2H channels, the recurrent kernels,
# bfloat16, varlen
CALLS = [
    (64, False, torch.float32, "chunk", False, "triton"),
    (128, False, torch.float32, "chunk", False, "triton"),
    (64, True, torch.float32, "chunk", False, "triton"),
    (1, False, torch.float32, "chunk", False, "triton"),
    (1, False, torch.bfloat16, "chunk", True, "triton"),
    (1, False, torch.float32, "chunk", True, "triton-split"),  # our scan split over chunks
    (1, False, torch.float32, "chunk", False, "fla"),
    (1, False, torch.float32, "recurrent", False, "fla"),
    (16, False, torch.float32, "recurrent", False, "triton"),
    (64, False, torch.bfloat16, "chunk", False, "triton"),
    (16, False, torch.float32, "chunk", True, "triton"),
]


def _launch(dk: int, per_head: bool, dtype: torch.dtype, mode: str, packed: bool, backend: str) -> None:
    """One forward and backward with initial and final states through ``backend``."""
    g = torch.Generator().manual_seed(dk)
    L, H, d = 40, 2, 1 if per_head else dk
    q, k, v = (torch.randn(1, L, H, dk, generator=g, dtype=dtype, requires_grad=True) for _ in range(3))
    log_a = torch.complex(-torch.rand(1, L, H, d, generator=g), torch.randn(1, L, H, d, generator=g))
    log_a.requires_grad_(True)
    n = 2 if packed else 1
    h0 = torch.zeros(n, H, dk, dk, dtype=torch.complex64, requires_grad=True)
    cu_seqlens = torch.tensor([0, 17, L], dtype=torch.int32) if packed else None
    ours = importlib.import_module("gateloop.ops.triton.siso_scan")
    policy = ours.split_over_chunks
    if backend == "triton-split":  # what a GPU takes when B·H/32 programs leave it idle
        ours.split_over_chunks = lambda programs, device: True
    try:
        y, h = gate_loop(
            q, k, v, log_a=log_a, mode=mode, initial_state=h0, output_final_state=True,
            cu_seqlens=cu_seqlens, backend=backend.removesuffix("-split"),  # type: ignore[arg-type]
        )  # fmt: skip
        (y.float().sum() + h.abs().sum()).backward()
    finally:
        ours.split_over_chunks = policy


@pytest.mark.slow
def test_every_launch_compiles_for_sm80_and_sm90_within_shared_memory(tmp_path: Path) -> None:
    with recording() as launches:
        for call in CALLS:
            _launch(*call)
    path = Path(os.environ.get("GATELOOP_TRITON_LAUNCHES", tmp_path / "launches.json"))
    path.write_text(json.dumps(launches))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("triton_launches.py")
    out = subprocess.run(
        [sys.executable, str(script), str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines()]
    kernels = {r["kernel"] for r in results}
    assert len(kernels) >= 23, f"expected the chunk, recurrent and HGRN kernels, compiled {sorted(kernels)}"
    ours = {
        "siso_scan_fwd_kernel",
        "siso_scan_bwd_kernel",
        "siso_chunk_summary_kernel",
        "siso_chunk_carry_kernel",
    }
    ours |= {"siso_chunk_output_kernel", "siso_adjoint_summary_kernel", "siso_adjoint_carry_kernel"}
    assert ours | {"siso_chunk_grad_kernel"} <= kernels, sorted(kernels)
    failed = [r for r in results if "error" in r or r["shared"] > r["limit"]]
    assert not failed, "\n".join(json.dumps(r) for r in failed)
