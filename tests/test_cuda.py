"""On a CUDA device, every linear mode against the float64 loop (computed on the CPU).

Skipped without a GPU (CI has none); run on a GPU machine with ``python -m pytest tests/test_cuda.py``.
The chunked mode is the pure-PyTorch path there (the compiled SISO kernel is CPU-only).
"""

from __future__ import annotations

import pytest
import torch

from gateloop import gate_loop

from helpers import compare, make_problem, run_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


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


@pytest.mark.parametrize("dims", [(16, 16), (1, 1)], ids=["d16", "siso"])
def test_cuda_step_matches_cpu(dims: tuple[int, int]) -> None:
    """gate_loop_step on CUDA tensors == on the CPU (float64), state carried over 20 tokens."""
    from gateloop import gate_loop_step

    dk, dv = dims
    p = make_problem(B=2, L=20, H=3, dk=dk, dv=dv, seed=5)
    states = {"cpu": p.h0, "cuda": p.h0.cuda()}  # type: ignore[union-attr]
    for t in range(20):
        for device in states:
            args = (p.q[:, t], p.k[:, t], p.v[:, t])
            y, states[device] = gate_loop_step(
                *(a.to(device) for a in args), log_a=p.trans[:, t].to(device), state=states[device]
            )
            if device == "cpu":
                y_cpu = y
        assert y.device.type == "cuda"
        torch.testing.assert_close(y.cpu(), y_cpu, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(states["cuda"].cpu(), states["cpu"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("model_name", ["gateloop", "transformer"])
def test_cuda_generation_matches_cpu(model_name: str) -> None:
    """Greedy generation (prefill, then cached steps) gives the same tokens on CUDA as on the CPU."""
    from gateloop.models import GateLoopConfig, GateLoopLM, TransformerConfig, TransformerLM

    torch.manual_seed(0)
    model = (
        GateLoopLM(GateLoopConfig.tiny())
        if model_name == "gateloop"
        else TransformerLM(TransformerConfig.tiny())
    )
    model = model.double().eval()
    prompt = torch.randint(0, 97, (2, 9))
    cpu = model.generate(prompt, 12, temperature=0)
    gpu = model.cuda().generate(prompt.cuda(), 12, temperature=0)
    assert gpu.device.type == "cuda"
    assert torch.equal(gpu.cpu(), cpu)
