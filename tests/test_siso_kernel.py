"""The compiled SISO kernel (dk = dv = 1) and its pure-PyTorch fallback against the float64 loop."""

from __future__ import annotations

import importlib
import itertools
import math
import os
from collections.abc import Callable

import pytest
import torch

from gateloop import gate_loop
from gateloop.ops import siso_fused
from gateloop.ops._extension import load_extension

from helpers import TOL_F32, TOL_F64, compare, make_problem, pure_pytorch, run_mode, run_reference

PATHS = ("chunk", "chunk-pytorch")  # fused kernel, pure-PyTorch chunked form


def test_kernel_builds_here() -> None:
    """CI machines have a compiler: a broken kernel build must fail here, not fall back silently."""
    if os.environ.get("GATELOOP_NO_EXTENSION"):
        pytest.skip("GATELOOP_NO_EXTENSION is set")
    assert load_extension("siso_scan.cpp") is not None


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("L", "H", "complex_a", "with_h0", "use_log"),
    [
        pytest.param(
            L,
            H,
            c,
            h0,
            log,
            id=f"L{L}-H{H}-{'c' if c else 'r'}-{'h0' if h0 else 'z'}-{'log' if log else 'a'}",
        )
        for L, H in itertools.product((1, 2, 63, 130), (1, 64, 130))
        for c, h0, log in itertools.product((True, False), repeat=3)
        if not (H == 64 and L == 130)
    ],
)
def test_siso_matches_reference(
    path: str, L: int, H: int, complex_a: bool, with_h0: bool, use_log: bool
) -> None:
    """H = 130 spans three 64-channel blocks (the last partial); L = 1 and odd L; y, state, all grads."""
    p = make_problem(
        B=2, L=L, H=H, dk=1, dv=1, complex_a=complex_a, with_h0=with_h0, use_log=use_log, seed=L * 7 + H
    )
    ref = run_reference(p)
    compare(ref, run_mode(p, path, torch.float64), TOL_F64)
    compare(ref, run_mode(p, path, torch.float32), TOL_F32)


@pytest.mark.parametrize("regime", ["near_zero", "near_one", "mixed", "strong"])
def test_siso_saturated_gates_long(regime: str) -> None:
    """|a| -> 0 with exact zeros (log_a = -inf: exact resets, exact zero gradients) and |a| -> 1, L = 3000."""
    p = make_problem(B=1, L=3000, H=5, dk=1, dv=1, regime=regime, seed=1)
    ref = run_reference(p)
    compare(ref, run_mode(p, "chunk", torch.float64), TOL_F64)
    compare(ref, run_mode(p, "chunk", torch.float32), TOL_F32)


def test_siso_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    B, L, H = 2, 9, 3

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)

    q, k, v = rnd(B, L, H, 1), rnd(B, L, H, 1), rnd(B, L, H, 1)
    lm = (torch.rand(B, L, H, 1, generator=g, dtype=torch.float64) * -2).requires_grad_(True)
    ph = rnd(B, L, H, 1)
    h0 = torch.randn(B, H, 1, 1, generator=g, dtype=torch.complex128).requires_grad_(True)

    def fn(q, k, v, lm, ph, h0):
        y, final = gate_loop(q, k, v, log_a=torch.complex(lm, ph), initial_state=h0, output_final_state=True)
        return y, torch.view_as_real(final)

    assert siso_fused.fused_siso_applies(q, k, v)
    assert torch.autograd.gradcheck(fn, (q, k, v, lm, ph, h0))


def test_siso_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """chunk mode: the kernel for real SISO inputs on CPU; the element-wise SISO form for complex q
    or without the kernel; the multi-head form for dk > 1 or dv > 1."""
    dispatcher = importlib.import_module("gateloop.ops.gate_loop")  # the module, not the function
    calls: list[str] = []

    def counting(name: str, original: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kw: object) -> object:
            calls.append(name)
            return original(*args, **kw)

        return wrapper

    for name in ("gate_loop_siso_fused", "gate_loop_siso_chunked", "gate_loop_chunk"):
        monkeypatch.setattr(dispatcher, name, counting(name, getattr(dispatcher, name)))
    x = torch.randn(1, 5, 2, 1)
    gate_loop(x, x, x, log_a=torch.complex(-x.abs(), x))
    assert calls == ["gate_loop_siso_fused"]
    gate_loop(x.to(torch.complex64), x, x, log_a=-x.abs())
    assert calls[1:] == ["gate_loop_siso_chunked"]
    with pure_pytorch():
        gate_loop(x, x, x, log_a=-x.abs())
    assert calls[2:] == ["gate_loop_siso_chunked"]
    y = torch.randn(1, 5, 2, 2)
    gate_loop(y, y, y, log_a=-y.abs())
    gate_loop(y[..., :1], y[..., :1], y, log_a=-y[..., :1].abs())  # dk = 1, dv = 2
    assert calls[3:] == ["gate_loop_chunk", "gate_loop_chunk"]


def test_siso_noncontiguous_and_no_grad() -> None:
    """Strided inputs (views of a wider tensor), no-grad calls and partial requires_grad."""
    g = torch.Generator().manual_seed(3)
    wide = torch.randn(2, 40, 3, 4, generator=g, dtype=torch.float64)
    q, k, v = wide[..., 0:1], wide[..., 1:2], wide[..., 2:3]
    log_a = torch.complex(-wide[..., 3:4].abs(), wide[..., 3:4])
    with pure_pytorch():
        ref, ref_h = gate_loop(q, k, v, log_a=log_a, output_final_state=True)
    with torch.no_grad():
        out, out_h = gate_loop(q, k, v, log_a=log_a, output_final_state=True)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_h, ref_h, rtol=1e-12, atol=1e-12)
    vg = v.clone().requires_grad_(True)
    y, _ = gate_loop(q, k, vg, log_a=log_a)
    (y**2).sum().backward()
    with pure_pytorch():
        vr = v.clone().requires_grad_(True)
        yr, _ = gate_loop(q, k, vr, log_a=log_a)
        (yr**2).sum().backward()
    torch.testing.assert_close(vg.grad, vr.grad, rtol=1e-10, atol=1e-12)


def test_siso_exact_reset_gradient_is_exact() -> None:
    """log|a| = -inf: the kernel applies no floor, so d/dlog|a| is exactly zero there and finite elsewhere."""
    lm = torch.full((1, 6, 1, 1), -0.1, dtype=torch.float64)
    lm[0, 3] = -math.inf
    lm.requires_grad_(True)
    ones = torch.ones(1, 6, 1, 1, dtype=torch.float64)
    y, _ = gate_loop(ones, ones, ones, log_a=lm)
    y.sum().backward()
    assert torch.isfinite(lm.grad).all()
    assert lm.grad[0, 3].item() == 0.0
    # after the reset y_n restarts: y_3 = 1, y_4 = 1 + e^-0.1
    assert y[0, 3].item() == 1.0
    assert y[0, 4].item() == pytest.approx(1 + math.exp(-0.1), rel=1e-14)


def test_custom_ops_pass_opcheck() -> None:
    """The kernel's torch.library ops: schema and fake (meta) implementations agree with the real ones."""
    from gateloop.ops.siso_fused import _siso_backward, _siso_forward

    g = torch.Generator().manual_seed(0)
    B, L, H = 2, 70, 3  # L > 64: two checkpoints
    q, k, v = (torch.randn(B, L, H, generator=g) for _ in range(3))
    h0r, h0i = torch.randn(B, H, generator=g), torch.randn(B, H, generator=g)
    checks = ("test_schema", "test_faketensor")
    for log_a in (-torch.rand(B, L, H, 2, generator=g), -torch.rand(B, L, H, generator=g)):  # complex, real
        torch.library.opcheck(_siso_forward, (q, k, v, log_a, h0r, h0i, 0.5, True), test_utils=checks)
        _, _, _, ckr, cki = _siso_forward(q, k, v, log_a, h0r, h0i, 0.5, True)
        args = (q, q, k, v, log_a, ckr, cki, h0r, h0i, 0.5)
        torch.library.opcheck(_siso_backward, args, test_utils=checks)


def test_siso_under_torch_compile() -> None:
    """torch.compile traces through the kernel's custom ops and gives eager's values and gradients."""
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 80, 4, 1, generator=g, requires_grad=True) for _ in range(3))
    log_a = torch.complex(-torch.rand(2, 80, 4, 1, generator=g), torch.randn(2, 80, 4, 1, generator=g))
    log_a.requires_grad_(True)

    def f(q, k, v, log_a):
        return gate_loop(q, k, v, log_a=log_a)[0].square().sum()

    eager = torch.autograd.grad(f(q, k, v, log_a), (q, k, v, log_a))
    compiled = torch.compile(f, fullgraph=True)
    grads = torch.autograd.grad(compiled(q, k, v, log_a), (q, k, v, log_a))
    for a, b in zip(eager, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_siso_same_bits_for_any_thread_count() -> None:
    """Channel blocks are independent tasks on torch's pool: 1 or 2 threads give identical bits."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(3, 200, 130, 1, generator=g, requires_grad=True) for _ in range(3))
    log_a = torch.complex(-torch.rand(3, 200, 130, 1, generator=g), torch.randn(3, 200, 130, 1, generator=g))
    log_a.requires_grad_(True)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y, _ = gate_loop(q, k, v, log_a=log_a)
            results.append((y, *torch.autograd.grad(y.square().sum(), (q, k, v, log_a))))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_failed_build_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """No compiler (or any build error): a RuntimeWarning that says why, then the pure-PyTorch path."""
    from gateloop.ops import _extension

    def broken(source: str) -> None:
        raise OSError("g++: command not found")

    monkeypatch.setattr(_extension, "_build", broken)
    monkeypatch.setattr(_extension, "_LOADED", {})
    x = torch.randn(1, 9, 2, 1, dtype=torch.float64)
    log_a = torch.complex(-x.abs(), x)
    with pytest.warns(RuntimeWarning, match="g\\+\\+: command not found"):
        y, _ = gate_loop(x, x, x, log_a=log_a)
    with pure_pytorch():
        ref, _ = gate_loop(x, x, x, log_a=log_a)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


def test_double_backward_is_refused_not_wrong() -> None:
    """The kernel is first-order: differentiating its backward raises, naming the op."""
    x = torch.randn(1, 9, 2, 1, dtype=torch.float64, requires_grad=True)
    log_a = torch.complex(
        -torch.rand(1, 9, 2, 1, dtype=torch.float64), torch.randn(1, 9, 2, 1, dtype=torch.float64)
    )
    y, _ = gate_loop(x, x, x, log_a=log_a)
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="siso_backward"):
        g.sum().backward()
