"""Whole models trace with ``torch.compile(fullgraph=True)``, forward and backward."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from gateloop import gate_loop
from gateloop.models import GateLoopConfig, GateLoopLM

from helpers import TOL_F32, TOL_F64, compare, make_problem, run_mode, run_reference


def _assert_compiled_matches_eager(model: GateLoopLM) -> None:
    """torch.compile(model, fullgraph=True): logits and every gradient equal eager's."""
    compiled = torch.compile(model, fullgraph=True)
    ids = torch.randint(0, 97, (2, 70))
    out = compiled(ids)
    out.pow(2).mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager = model(ids)
    eager.pow(2).mean().backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_siso_model_compiles_fullgraph_on_its_first_call() -> None:
    """The first call is the compiled one: the kernel's build/load is not traced (a constant to
    dynamo) and the ids' range check does not break the graph."""
    torch.manual_seed(0)
    model = GateLoopLM(GateLoopConfig.tiny(n_head=32))  # d_qk = 32 over 32 heads: SISO
    _assert_compiled_matches_eager(model)


@pytest.mark.slow
def test_train_with_compile_end_to_end(tmp_path) -> None:
    """`--train.compile true`: the compiled run logs the same losses as the eager one."""
    from gateloop.training import MetricsLogger

    from training_helpers import train_tiny

    overrides = {"train.epochs": 1, "train.eval_every_epochs": None}
    train_tiny(tmp_path / "eager", overrides=overrides)
    train_tiny(tmp_path / "compiled", overrides={**overrides, "train.compile": True})
    eager, compiled = (
        [r["loss"] for r in MetricsLogger(tmp_path / d).read() if "loss" in r] for d in ("eager", "compiled")
    )
    assert len(compiled) == 5
    assert compiled == pytest.approx(eager, rel=1e-4)


# The chunked forms' exact fallback for wide-decay chunks is data-dependent (ops/_unsafe_chunks.py,
# ops/siso_chunked.py). "near_zero" gates (|a| down to 1e-12, exact zeros) send most chunks there,
# "uniform" gates some; L = 130 is not a multiple of the chunk (64). dk = 1 with "chunk-pytorch" is
# the SISO element-wise form (the path without the compiled kernel, as on a machine without g++).
@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "dk", "regime", "per_head", "dtype", "tol"),
    [
        ("chunk", 8, "near_zero", False, torch.float32, TOL_F32),
        ("chunk", 8, "uniform", True, torch.float32, TOL_F32),
        ("chunk", 8, "near_zero", True, torch.float64, TOL_F64),
        ("chunk-pytorch", 1, "near_zero", False, torch.float32, TOL_F32),
        ("chunk-pytorch", 1, "uniform", False, torch.float64, TOL_F64),
    ],
    ids=[
        "per_key-near_zero-f32",
        "per_head-uniform-f32",
        "per_head-near_zero-f64",
        "siso-near_zero-f32",
        "siso-uniform-f64",
    ],
)
def test_chunk_op_compiles_fullgraph_and_matches_reference(
    mode: str, dk: int, regime: str, per_head: bool, dtype: torch.dtype, tol: float
) -> None:
    torch._dynamo.reset()
    p = make_problem(B=2, L=130, H=2, dk=dk, dv=dk, per_head=per_head, regime=regime, seed=3)
    compiled = torch.compile(gate_loop, fullgraph=True)
    out = run_mode(p, mode, dtype, op=compiled)
    compare(run_reference(p), out, tol)
    compare(run_mode(p, mode, dtype), out, tol)  # and the eager op


def _unsafe_inputs(
    *, per_head: bool, phase: bool, complex_q: bool, complex_k: bool, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, ...]:
    """Random inputs of the exact-fallback ops: (scores, unsafe, qc, kc, lc, Phi|None), some chunks unsafe."""
    g = torch.Generator().manual_seed(
        int(per_head) + 2 * int(phase) + 4 * int(complex_q) + 8 * int(complex_k)
    )
    B, H, N, c, dk = 1, 2, 3, 40, 4  # c 40: sub-chunks of 10 in the exact path
    d = 1 if per_head else dk

    def randn(*shape: int, cplx: bool = False) -> Tensor:
        t = torch.randn(*shape, generator=g, dtype=dtype)
        return torch.complex(t, torch.randn(*shape, generator=g, dtype=dtype)) if cplx else t

    scores = randn(B, H, N, c, c)
    unsafe = torch.tensor([[[True, False, True], [False, False, True]]])
    qc, kc = randn(B, H, N, c, dk, cplx=complex_q), randn(B, H, N, c, dk, cplx=complex_k)
    lc = -10 * torch.rand(B, H, N, c, d, generator=g, dtype=dtype)  # chunk ranges up to ~80
    Phi = randn(B, H, N, c, d) if phase else None
    return scores, unsafe, qc, kc, lc, Phi


UNSAFE_CASES = [
    dict(per_head=False, phase=True, complex_q=False, complex_k=False),
    dict(per_head=True, phase=True, complex_q=False, complex_k=False),
    dict(per_head=False, phase=False, complex_q=False, complex_k=False),
    dict(per_head=True, phase=False, complex_q=False, complex_k=False),
    dict(per_head=False, phase=True, complex_q=True, complex_k=False),
    dict(per_head=True, phase=True, complex_q=False, complex_k=True),
    dict(per_head=False, phase=False, complex_q=True, complex_k=True),
]


@pytest.mark.parametrize("case", UNSAFE_CASES, ids=lambda c: "-".join(k for k, v in c.items() if v) or "real")
def test_unsafe_chunk_backward_matches_autograd(case: dict[str, bool]) -> None:
    """The written-out backward of the compiled path's exact fallback == autograd through the eager
    function (float64), for every input the doubled keys can take."""
    from gateloop.ops._unsafe_chunks import exact_unsafe_scores_op, with_exact_unsafe_scores

    scores, unsafe, qc, kc, lc, Phi = _unsafe_inputs(**case)
    doubled = Phi is not None or qc.is_complex() or kc.is_complex()
    grads = {}
    for name, fn in (("autograd", with_exact_unsafe_scores), ("op", exact_unsafe_scores_op)):
        leaves = [t.clone().requires_grad_(True) for t in (scores, qc, kc, lc)]
        phi = None if Phi is None else Phi.clone().requires_grad_(True)
        out = fn(leaves[0], unsafe, *leaves[1:], phi, doubled)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads[name] = (out.detach(), *(t.grad for t in leaves), None if phi is None else phi.grad)
    for ref, got in zip(grads["autograd"], grads["op"], strict=True):
        if ref is None:
            assert got is None
            continue
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", UNSAFE_CASES[:2], ids=["per_key", "per_head"])
def test_unsafe_chunk_ops_pass_opcheck(case: dict[str, bool]) -> None:
    """The custom ops' schemas, fake implementations and autograd registration are consistent."""
    from gateloop.ops._unsafe_chunks import _exact_backward, _exact_forward

    scores, unsafe, qc, kc, lc, Phi = _unsafe_inputs(**case, dtype=torch.float32)
    for phi in (Phi, None):
        doubled = phi is not None
        torch.library.opcheck(_exact_forward, (scores, unsafe, qc, kc, lc, phi, doubled))
        torch.library.opcheck(_exact_backward, (torch.randn_like(scores), unsafe, qc, kc, lc, phi, doubled))


@pytest.mark.slow
def test_multi_dim_model_compiles_fullgraph_with_wide_decay_chunks() -> None:
    """A model whose gates start near zero (every chunk takes the exact fallback) traces whole,
    forward and backward, and matches eager."""
    torch.manual_seed(0)
    model = GateLoopLM(GateLoopConfig.tiny(magnitude_init=(1e-6, 1e-5)))  # 4 heads of width 8
    _assert_compiled_matches_eager(model)
