"""On a CUDA device, every linear mode against the float64 loop (computed on the CPU).

Skipped without a GPU (CI has none); run on a GPU machine with ``python -m pytest tests/test_cuda.py``.
The chunked mode is the pure-PyTorch path there (the compiled SISO kernel is CPU-only).
"""

from __future__ import annotations

import pytest
import torch

from gateloop import gate_loop

from helpers import compare, make_problem, run_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("mode", ("chunk", "recurrent", "scan", "attention"))
@pytest.mark.parametrize("dims", [(16, 16), (1, 1)], ids=["d16", "siso"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_cuda_matches_reference(mode: str, dims: tuple[int, int], dtype: torch.dtype) -> None:
    dk, dv = dims
    p = make_problem(B=2, L=131, H=3, dk=dk, dv=dv, seed=dk)
    ref = run_reference(p)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.to("cuda", cdtype if t.is_complex() else dtype).detach().requires_grad_(True)

    q, k, v, log_a, h0 = (leaf(t) for t in (p.q, p.k, p.v, p.trans, p.h0))  # type: ignore[arg-type]
    y, final = gate_loop(q, k, v, log_a=log_a, mode=mode, initial_state=h0, output_final_state=True)
    assert y.device.type == "cuda"
    loss = (y.double() * p.gy.cuda()).sum()
    f = final.to(torch.complex128)
    loss = loss + (f.real * p.gh.real.cuda()).sum() + (f.imag * p.gh.imag.cuda()).sum()
    loss.backward()
    out = {"y": y.detach().cpu(), "final_state": final.detach().cpu()}
    for name, t in (("q", q), ("k", k), ("v", v), ("trans", log_a), ("h0", h0)):
        out[f"grad_{name}"] = t.grad.cpu()  # type: ignore[union-attr]
    compare(ref, out, 1e-10 if dtype == torch.float64 else 1e-4)
