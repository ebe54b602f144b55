"""Tier C (``pytest -m gpu``): the Triton backend on a CUDA device against the float64 loop on the
CPU, ``auto`` picking it, and a model end to end. Skipped without CUDA (CI has none)."""

from __future__ import annotations

import pytest
import torch

from gateloop import gate_loop

from helpers import TOL_F32, Problem, _collect, _leaves, compare, make_problem, run_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
pytest.importorskip("triton")
pytest.importorskip("fla")


def _run_cuda(p: Problem, backend: str) -> dict[str, torch.Tensor]:
    leaves = {n: t.detach().cuda().requires_grad_(True) for n, t in _leaves(p, torch.float32).items()}
    y, final = gate_loop(
        leaves["q"],
        leaves["k"],
        leaves["v"],
        log_a=leaves["trans"],
        initial_state=leaves.get("h0"),
        output_final_state=True,
        backend=backend,
    )
    assert y.device.type == "cuda"
    return {n: t.cpu() for n, t in _collect(y.cpu(), final.cpu(), leaves, p).items()}


@pytest.mark.parametrize("backend", ["triton", "auto"])
@pytest.mark.parametrize(("d", "per_head"), [(1, False), (16, False), (64, False), (64, True)])
@pytest.mark.parametrize("L", [1, 130, 2048])
def test_gpu_triton_matches_reference(backend: str, d: int, per_head: bool, L: int) -> None:
    p = make_problem(B=2, L=L, H=3, dk=d, dv=d, per_head=per_head, seed=L + d)
    compare(run_reference(p), _run_cuda(p, backend), TOL_F32)


def test_gpu_model_end_to_end() -> None:
    from gateloop.models import GateLoopConfig, GateLoopLM

    torch.manual_seed(0)
    model = GateLoopLM(GateLoopConfig.tiny())
    ids = torch.randint(0, 97, (2, 64))
    cpu_logits = model(ids)
    gpu = model.cuda()
    gpu_logits = gpu(ids.cuda())
    torch.testing.assert_close(gpu_logits.cpu(), cpu_logits, rtol=1e-3, atol=1e-3)
    gpu_logits.float().logsumexp(-1).mean().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in gpu.parameters())
    out = gpu.generate(ids[:, :8].cuda(), 4, temperature=0)
    assert out.device.type == "cuda"
