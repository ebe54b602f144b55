"""Tier A: ``backend="triton"`` (fla-core's kernels behind GateLoop's reduction) against the float64 loop.

Without a GPU the kernels run under Triton's CPU interpreter (``triton_interpret.py``); with one,
on CUDA. Every case checks y, the final state and every gradient (q, k, v, log_a / a, initial state)
in relative RMS (helpers.rel_rms). Shapes are small (the interpreter costs ~1 ms per op per
program): the whole tier takes well under 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import math

import pytest
import torch
import triton_interpret
from torch import Tensor

pytest.importorskip("triton")
pytest.importorskip("fla")

from gateloop import gate_loop

from helpers import TOL_F32, Problem, _collect, _leaves, assert_close, compare, make_problem, run_reference
from triton_helpers import run_triton, varlen_problem, varlen_reference

DEVICE = triton_interpret.DEVICE
# why: the interpreter evaluates exp() on the masked-off lanes of a block too (numpy, no masking),
# which overflows there; those lanes are never stored, and every output is checked to be finite
pytestmark = [
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]
# Half precision: q', k', v enter the kernels rounded (bfloat16: 8-bit mantissa, 2^-9 = 2e-3 per
# element; float16: 11 bits, 2.4e-4), against the float64 loop on the same rounded inputs.
# Measured (L 64, d 1/16/64): bfloat16 y, states, grads of q, k, v, h0 <= 6.5e-3, grad log_a <= 2.0e-2
# (fla forms it from sums of q·dq - k·dk); float16 <= 4.2e-4 and <= 2.3e-3.
TOL_BF16, TOL_BF16_LOG_A = 1e-2, 5e-2
TOL_F16, TOL_F16_LOG_A = 1e-3, 5e-3


def problem(**kw: object) -> Problem:
    base: dict[str, object] = {"B": 1, "H": 2}
    base.update(kw)
    return make_problem(**base)  # type: ignore[arg-type]


# --- shapes: L x dk x per-head x real/complex -----------------------------------------------------

_SHAPES = [(L, 16, False, True) for L in (1, 17, 64, 130)]  # L sweep
_SHAPES += [(130, d, ph, c) for d in (1, 16, 64) for ph in (False, True) for c in (False, True)]  # dk sweep
_SHAPES += [(1, 1, False, True), (17, 1, False, True)]
CASES = [
    pytest.param(L, d, ph, c, id=f"L{L}-d{d}-{'head' if ph else 'key'}-{'c' if c else 'r'}")
    for L, d, ph, c in dict.fromkeys(_SHAPES)  # ordered, without the repeated L130-d16-key-c
    if not (ph and d == 1)  # per-head == per-key when dk == 1
]


@pytest.mark.parametrize(("L", "d", "per_head", "complex_a"), CASES)
def test_triton_matches_reference(L: int, d: int, per_head: bool, complex_a: bool) -> None:
    p = problem(L=L, dk=d, dv=d, per_head=per_head, complex_a=complex_a, seed=L + d)
    compare(run_reference(p), run_triton(p), TOL_F32)


def test_triton_complex_qk_and_transitions_given_as_a() -> None:
    p = problem(L=40, dk=16, dv=16, complex_qk=True, seed=3)
    compare(run_reference(p), run_triton(p), TOL_F32)
    p = problem(L=40, dk=16, dv=16, use_log=False, regime="strong", seed=4)  # a itself, |a| <= 0.5
    compare(run_reference(p), run_triton(p), TOL_F32)


def test_triton_narrow_heads_are_padded() -> None:
    p = problem(L=30, dk=4, dv=8, seed=5)  # K, V < 16: zero-padded for tl.dot
    compare(run_reference(p), run_triton(p), TOL_F32)


@pytest.mark.parametrize("d", [1, 16])
def test_triton_without_states(d: int) -> None:
    """No initial state, no final state (SISO then takes chunk_hgrn)."""
    p = problem(L=130, dk=d, dv=d, with_h0=False, seed=6)
    ref = run_reference(p, with_final=False)
    leaves = {n: t.detach().to(DEVICE).requires_grad_(True) for n, t in _leaves(p, torch.float32).items()}
    y, final = gate_loop(leaves["q"], leaves["k"], leaves["v"], log_a=leaves["trans"], backend="triton")
    assert final is None
    compare(ref, {n: t.cpu() for n, t in _collect(y.cpu(), None, leaves, p).items()}, TOL_F32)


@pytest.mark.parametrize("d", [1, 16])
def test_triton_recurrent_mode(d: int) -> None:
    p = problem(L=64, dk=d, dv=d, seed=7)
    compare(run_reference(p), run_triton(p, mode="recurrent"), TOL_F32)


# --- saturated gates ------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, pytest.param(16, marks=pytest.mark.slow)])
def test_triton_gates_near_one_long(d: int) -> None:
    """1 - |a| <= 1e-6 over 2048 steps: nothing decays, phases wind up (float64 Φ mod 2π)."""
    p = problem(L=2048, H=1, dk=d, dv=d, regime="near_one", seed=8)
    compare(run_reference(p), run_triton(p), TOL_F32)


@pytest.mark.parametrize("regime", ["near_zero", "mixed"])
@pytest.mark.parametrize("d", [1, 16])
def test_triton_gates_near_zero(d: int, regime: str) -> None:
    """|a| down to 1e-12 with exact zeros (log|a| = -inf, floored at -30 in float32)."""
    p = problem(L=130, dk=d, dv=d, regime=regime, seed=9)
    compare(run_reference(p), run_triton(p), TOL_F32)


def test_triton_gates_all_below_1e6_wide_heads() -> None:
    """dk = 16 (fla's chunk_gla on doubled keys), every |a| <= 1e-6 with exact zeros: everything
    to 1e-4 except the log_a gradient.

    That gradient is tiny here (~1e-6: dL/dlog a = a dL/da) while the terms summed into it along
    the sequence (through the cumulative phase Φ and log-decay G) are O(1), so float32 leaves an
    *absolute* error of ~1e-6 (measured <= 3e-6; the torch chunk mode behaves alike, relative
    errors 0.8 there too): docs/numerics.md, 'Gradients with respect to a'. One-dimensional heads
    run on our scan, which has no such sum (test_triton_siso_scan.py holds it to 1e-4 relative).
    """
    p = problem(L=130, dk=16, dv=16, regime="near_zero", seed=9)
    log_mag = p.trans.real.clamp(max=math.log(1e-6))  # (B, L, H, d): -inf stays -inf
    p.trans = torch.complex(log_mag, p.trans.imag)
    ref, out = run_reference(p), run_triton(p)
    compare(ref, out, TOL_F32, skip=("grad_trans",))
    err = (ref["grad_trans"] - out["grad_trans"]).abs().pow(2).mean().sqrt()
    assert err <= 1e-5, f"grad_trans: absolute RMS error {err:.2e} > 1e-5"


# --- packed sequences -----------------------------------------------------------------------------

OFFSETS = [0, 5, 70, 130]  # three ragged sequences (one shorter than a chunk, one across a chunk end)


@pytest.mark.parametrize(
    ("d", "per_head"), [(1, False), (16, False), (16, True)], ids=["siso", "key", "head"]
)
def test_triton_cu_seqlens(d: int, per_head: bool) -> None:
    p = varlen_problem(OFFSETS, d=d, per_head=per_head, seed=10 + d)
    cu = torch.tensor(OFFSETS, dtype=torch.int32, device=DEVICE)
    compare(varlen_reference(p, OFFSETS), run_triton(p, cu_seqlens=cu), TOL_F32)


# --- half precision -------------------------------------------------------------------------------


def _rounded(p: Problem, dtype: torch.dtype) -> Problem:
    """p with q, k, v rounded to ``dtype``: the reference sees the inputs the kernels see."""
    p.q, p.k, p.v = (t.to(dtype).double() for t in (p.q, p.k, p.v))
    return p


@pytest.mark.parametrize(
    ("dtype", "tol", "tol_log_a"),
    [(torch.bfloat16, TOL_BF16, TOL_BF16_LOG_A), (torch.float16, TOL_F16, TOL_F16_LOG_A)],
    ids=["bf16", "f16"],
)
@pytest.mark.parametrize("d", [1, 16])
def test_triton_half_precision(dtype: torch.dtype, tol: float, tol_log_a: float, d: int) -> None:
    p = _rounded(problem(L=64, dk=d, dv=d, seed=11), dtype)
    ref, out = run_reference(p), run_triton(p, dtype)
    assert out["y"].dtype == dtype
    compare(ref, out, tol, skip=("grad_trans",))
    assert_close("grad_trans", ref["grad_trans"], out["grad_trans"], tol_log_a)


# --- non-finite inputs ----------------------------------------------------------------------------


def _nonfinite_inputs(d: int) -> dict[str, Tensor]:
    """B 1, L 128, H 2: |a| = σ(x + 3) (gates near 1, so a NaN would travel far), 0.3·randn phases."""
    g = torch.Generator().manual_seed(40 + d)
    q, k, v = (torch.randn(1, 128, 2, d, generator=g) for _ in range(3))
    log_a = torch.complex(
        torch.nn.functional.logsigmoid(torch.randn(1, 128, 2, d, generator=g) + 3),
        0.3 * torch.randn(1, 128, 2, d, generator=g),
    )
    return {"q": q, "k": k, "v": v, "log_a": log_a}


def _triton_run(x: dict[str, Tensor], loss_rows: slice, **kw: object) -> tuple[Tensor, dict[str, Tensor]]:
    """y and the gradients of Σ y[:, loss_rows] · w (w fixed) from the Triton backend on DEVICE."""
    leaves = {n: t.detach().to(DEVICE).requires_grad_(True) for n, t in x.items()}
    y, _ = gate_loop(leaves["q"], leaves["k"], leaves["v"], log_a=leaves["log_a"], backend="triton", **kw)
    w = torch.linspace(-1, 1, y.shape[1], device=DEVICE)[None, :, None, None]
    grads = torch.autograd.grad((y[:, loss_rows] * w[:, loss_rows]).sum(), list(leaves.values()))
    return y.detach().cpu(), {n: g.cpu() for n, g in zip(leaves, grads, strict=True)}


@pytest.mark.parametrize("d", [1, 8], ids=["siso", "key"])
def test_triton_nonfinite_value_does_not_reach_earlier_positions(d: int) -> None:
    """As for the PyTorch modes (test_nonfinite.py): a NaN in v at t = 100 leaves every output and
    gradient before t bit-identical to the clean run's, and y at t is not finite."""
    clean = _nonfinite_inputs(d)
    poisoned = {n: t.clone() for n, t in clean.items()}
    poisoned["v"][0, 100, 0, 0] = math.nan
    t = 100
    y0, g0 = _triton_run(clean, slice(0, t))
    y, grads = _triton_run(poisoned, slice(0, t))
    assert torch.equal(y[:, :t], y0[:, :t]), "outputs before t changed"
    assert not torch.isfinite(y[0, t, 0]).all()
    for name, grad in grads.items():
        assert torch.equal(grad[:, :t], g0[name][:, :t]), f"gradient w.r.t. {name} before t changed"


@pytest.mark.parametrize("d", [1, 8], ids=["siso", "key"])
def test_triton_nonfinite_value_stays_in_its_packed_sequence(d: int) -> None:
    """cu_seqlens [0, 32, 64, 128]: a NaN key in sequence 0 leaves sequences 1 and 2 (outputs and
    the gradients of a loss over them) as in the clean run, within float32 rounding (fla's chunks
    span sequence starts, the floored log|a| there is -30)."""
    clean = _nonfinite_inputs(d)
    poisoned = {n: t.clone() for n, t in clean.items()}
    poisoned["k"][0, 10, 1, 0] = math.nan
    cu = torch.tensor([0, 32, 64, 128], dtype=torch.int32, device=DEVICE)
    y0, g0 = _triton_run(clean, slice(32, None), cu_seqlens=cu)
    y, grads = _triton_run(poisoned, slice(32, None), cu_seqlens=cu)
    assert torch.isfinite(y[:, 32:]).all(), "the NaN crossed into a later sequence"
    torch.testing.assert_close(y[:, 32:], y0[:, 32:], rtol=1e-6, atol=1e-6)
    assert not torch.isfinite(y[0, 10:32, 1]).all()
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), f"gradient w.r.t. {name} not finite"
        torch.testing.assert_close(grad, g0[name], rtol=1e-6, atol=1e-6)


# --- errors ---------------------------------------------------------------------------------------


def _small() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    q, k, v = torch.randn(3, 1, 6, 2, 4)
    return q, k, v, -torch.rand(1, 6, 2, 4)


def test_backend_choice_is_checked() -> None:
    q, k, v, la = _small()
    expected = "backend must be one of 'auto', 'triton', 'fla', 'torch'; got 'cuda'"
    with pytest.raises(ValueError, match=expected):
        gate_loop(q, k, v, log_a=la, backend="cuda")  # type: ignore[arg-type]


def test_triton_needs_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateloop.ops.triton import _runtime

    monkeypatch.setattr(_runtime, "extra_installed", lambda: False)
    q, k, v, la = _small()
    with pytest.raises(ImportError, match=r"pip install -e '\.\[cuda\]'"):
        gate_loop(q, k, v, log_a=la, backend="triton")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v, la = _small()
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        gate_loop(q, k, v, log_a=la, backend="triton")


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"mode": "attention"}, ValueError, "mode 'chunk' or 'recurrent'"),
        ({"chunk_size": 32}, ValueError, "chunk_size applies to backend='torch'"),
    ],
)
def test_triton_argument_errors(kw: dict[str, object], error: type[Exception], match: str) -> None:
    q, k, v, la = _small()
    with pytest.raises(error, match=match):
        gate_loop(q, k, v, log_a=la, backend="triton", **kw)  # type: ignore[arg-type]


def test_triton_refuses_float64() -> None:
    q, k, v, la = (t.double() for t in _small())
    with pytest.raises(TypeError, match="float64"):
        gate_loop(q, k, v, log_a=la, backend="triton")


def test_auto_keeps_cpu_tensors_on_torch() -> None:
    """auto never sends CPU tensors to the interpreter: same result as backend='torch'."""
    q, k, v, la = _small()
    y_auto, _ = gate_loop(q, k, v, log_a=la)
    y_torch, _ = gate_loop(q, k, v, log_a=la, backend="torch")
    assert torch.equal(y_auto, y_torch)
