"""gate_loop_step token by token equals gate_loop on the whole sequence."""

from __future__ import annotations

import pytest
import torch

from gateloop import gate_loop, gate_loop_step

from helpers import assert_close, make_problem


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("dk", "dv", "per_head"), [(8, 4, False), (8, 4, True), (1, 1, False)])
@pytest.mark.parametrize("use_log", [True, False], ids=["log_a", "a"])
def test_step_equals_sequence(dtype: torch.dtype, dk: int, dv: int, per_head: bool, use_log: bool) -> None:
    p = make_problem(B=2, L=40, H=3, dk=dk, dv=dv, per_head=per_head, regime="mixed", use_log=use_log, seed=1)
    cast = {torch.float64: torch.float64, torch.float32: torch.float32}[dtype]
    q, k, v = p.q.to(cast), p.k.to(cast), p.v.to(cast)
    trans = p.trans.to(torch.complex128 if cast == torch.float64 else torch.complex64)
    h0 = p.h0.to(trans.dtype)
    key = "log_a" if use_log else "a"
    y_full, h_full = gate_loop(q, k, v, **{key: trans}, initial_state=h0, output_final_state=True, scale=0.7)
    state = h0
    ys = []
    for t in range(q.shape[1]):
        y, state = gate_loop_step(q[:, t], k[:, t], v[:, t], **{key: trans[:, t]}, state=state, scale=0.7)
        ys.append(y)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert_close("y", y_full, torch.stack(ys, dim=1), tol)
    assert_close("state", h_full, state, tol)


def test_step_from_zero_state_and_dtype() -> None:
    q, k = torch.randn(2, 2, 3, 4)
    v = torch.randn(2, 3, 5)
    y, h = gate_loop_step(q, k, v, log_a=-torch.rand(2, 3, 1), state=None)
    assert y.shape == (2, 3, 5) and y.dtype == torch.float32
    assert h.shape == (2, 3, 4, 5) and h.dtype == torch.complex64
    expected = torch.einsum("bhd,bhd,bhe->bhe", q, k, v)
    assert torch.allclose(y, expected, atol=1e-5)


def test_step_half_precision_keeps_float32_state() -> None:
    q, k = torch.randn(2, 1, 2, 4, dtype=torch.bfloat16)
    v = torch.randn(1, 2, 4, dtype=torch.bfloat16)
    y, h = gate_loop_step(q, k, v, log_a=torch.zeros(1, 2, 4), state=None)
    assert y.dtype == torch.bfloat16 and h.dtype == torch.complex64
