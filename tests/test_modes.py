"""Every mode against the float64 naive loop: outputs, final state and every gradient."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from gateloop import gate_loop

from helpers import TOL_F32, TOL_F64, compare, make_problem, run_mode, run_reference

LINEAR_MODES = ("chunk", "recurrent", "scan", "attention")

GRID = [
    pytest.param(
        L,
        dk,
        H,
        per_head,
        complex_a,
        id=f"L{L}-d{dk}-H{H}-{'head' if per_head else 'key'}-{'c' if complex_a else 'r'}",
    )
    for L, dk, H, per_head, complex_a in itertools.product(
        (1, 2, 7, 64, 100, 257), (1, 16, 64), (1, 3), (False, True), (False, True)
    )
    if not (per_head and dk == 1)  # per-head == per-key when dk == 1
]

_REF_CACHE: dict[tuple, dict[str, torch.Tensor]] = {}


def _reference(key: tuple, problem) -> dict[str, torch.Tensor]:
    if key not in _REF_CACHE:
        _REF_CACHE[key] = run_reference(problem)
    return _REF_CACHE[key]


@pytest.mark.parametrize("mode", LINEAR_MODES)
@pytest.mark.parametrize(("L", "dk", "H", "per_head", "complex_a"), GRID)
def test_mode_matches_reference_float64(
    mode: str, L: int, dk: int, H: int, per_head: bool, complex_a: bool
) -> None:
    if mode == "attention" and dk == 64 and L == 257 and not per_head:
        pytest.skip("O(L^2 dk) memory; attention at long L is covered with small dk below")
    seed = hash((L, dk, H, per_head, complex_a)) % 1000
    kw = {
        "B": 1,
        "L": L,
        "H": H,
        "dk": dk,
        "dv": dk,
        "per_head": per_head,
        "complex_a": complex_a,
        "seed": seed,
    }
    p = make_problem(**kw, regime="mixed")
    ref = _reference(tuple(kw.items()), p)
    compare(ref, run_mode(p, mode, torch.float64), TOL_F64)


@pytest.mark.parametrize("mode", LINEAR_MODES)
@pytest.mark.parametrize(
    ("L", "dk", "dv"), [(1, 16, 16), (100, 16, 8), (257, 64, 64), (257, 1, 1), (100, 1, 16)]
)
@pytest.mark.parametrize("use_log", [True, False], ids=["log_a", "a"])
def test_mode_matches_reference_float32(mode: str, L: int, dk: int, dv: int, use_log: bool) -> None:
    if mode == "attention" and dk == 64:
        pytest.skip("O(L^2 dk) memory")
    p = make_problem(B=2, L=L, H=2, dk=dk, dv=dv, regime="uniform", use_log=use_log, seed=L + dk)
    ref, out = run_reference(p), run_mode(p, mode, torch.float32)
    if use_log or mode in ("recurrent", "scan"):
        compare(ref, out, TOL_F32)
        return
    # Log-space modes recover grad_a = grad_log_a / conj(a): float32 rounding in grad_log_a is
    # amplified by 1 / |a|. Check the computed quantity, grad_a * conj(a), at the float32 tolerance,
    # and grad_a itself where |a| >= 0.1 (amplification <= 10x).
    compare(ref, out, TOL_F32, skip=("grad_trans",))
    a = p.trans
    compare(
        {"grad_log_a": ref["grad_trans"] * a.conj()},
        {"grad_log_a": out["grad_trans"].to(a.dtype) * a.conj()},
        TOL_F32,
    )
    big = a.abs() >= 0.1
    compare({"grad_a": ref["grad_trans"][big]}, {"grad_a": out["grad_trans"][big]}, 10 * TOL_F32)


@pytest.mark.parametrize("mode", LINEAR_MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("complex_qk", [False, True], ids=["real_qk", "complex_qk"])
def test_complex_q_and_k(mode: str, dtype: torch.dtype, complex_qk: bool) -> None:
    p = make_problem(B=2, L=45, H=2, dk=6, dv=5, complex_qk=complex_qk, seed=3)
    compare(run_reference(p), run_mode(p, mode, dtype), TOL_F64 if dtype == torch.float64 else TOL_F32)


@pytest.mark.parametrize("mode", (*LINEAR_MODES, "chunk-pytorch"))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("dims", [(8, 8), (1, 1)], ids=["d8", "siso"])
def test_gates_near_zero_and_exact_zero(mode: str, dtype: torch.dtype, dims: tuple[int, int]) -> None:
    """|a| down to 1e-12 and exact zeros (log_a = -inf): hard resets, no NaN, exact gradients."""
    dk, dv = dims
    p = make_problem(B=2, L=150, H=2, dk=dk, dv=dv, regime="near_zero", seed=11)
    compare(run_reference(p), run_mode(p, mode, dtype), TOL_F64 if dtype == torch.float64 else TOL_F32)


@pytest.mark.parametrize("mode", ("recurrent", "scan"))
def test_exact_zero_a_gradients_in_direct_modes(mode: str) -> None:
    """Modes that multiply by a give the exact gradient w.r.t. a even at a == 0."""
    p = make_problem(B=1, L=60, H=2, dk=4, dv=3, regime="mixed", use_log=False, seed=5)
    assert (p.trans == 0).any()
    compare(run_reference(p), run_mode(p, mode, torch.float64), TOL_F64)


@pytest.mark.parametrize("mode", ("chunk", "attention", "softmax"))
def test_exact_zero_a_is_finite_in_log_modes(mode: str) -> None:
    """Log-space modes: a == 0 is a hard reset; outputs exact, gradients finite everywhere."""
    p = make_problem(
        B=1, L=60, H=2, dk=4, dv=3, regime="mixed", use_log=False, seed=5, with_h0=mode != "softmax"
    )
    with_final = mode != "softmax"
    out = run_mode(p, mode, torch.float32, with_final=with_final)
    for name, t in out.items():
        assert torch.isfinite(torch.view_as_real(t) if t.is_complex() else t).all(), name
    if mode != "softmax":
        ref = run_reference(p)
        compare(ref, out, TOL_F32, skip=("grad_trans",))
        alive = p.trans != 0
        compare({"g": ref["grad_trans"][alive]}, {"g": out["grad_trans"][alive]}, 1e-3)


@pytest.mark.parametrize("mode", ("chunk", "chunk-pytorch", "recurrent", "scan"))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("dims", [(4, 4), (1, 1)], ids=["d4", "siso"])
def test_gates_near_one_long_sequence(mode: str, dtype: torch.dtype, dims: tuple[int, int]) -> None:
    """1 - |a| < 1e-6 for 4096 steps: the state barely decays; no drift, no precision loss."""
    dk, dv = dims
    p = make_problem(B=1, L=4096, H=2, dk=dk, dv=dv, regime="near_one", seed=2)
    compare(run_reference(p), run_mode(p, mode, dtype), TOL_F64 if dtype == torch.float64 else TOL_F32)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("regime", ["strong", "near_one"])
def test_attention_exact_at_4096(dtype: torch.dtype, regime: str) -> None:
    """The surrogate attention must not divide by cumulative products (NaN for L >= 100)."""
    p = make_problem(B=1, L=4096, H=1, dk=2, dv=2, regime=regime, seed=4)
    compare(run_reference(p), run_mode(p, "attention", dtype), TOL_F64 if dtype == torch.float64 else TOL_F32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("dims", [(6, 5), (1, 1)], ids=["d6", "siso"])
@pytest.mark.parametrize("chunk_size", [1, 3, 16, 40, 64])
def test_chunk_sizes_and_unsafe_chunks(dtype: torch.dtype, dims: tuple[int, int], chunk_size: int) -> None:
    """Strong decay pushes chunks past the factorised form's safe range onto the exact pairwise path.

    (SISO runs the pure-PyTorch chunked path: the fused kernel has no chunks.)"""
    dk, dv = dims
    p = make_problem(B=2, L=131, H=2, dk=dk, dv=dv, regime="near_zero", seed=chunk_size)
    out = run_mode(p, "chunk-pytorch", dtype, chunk_size=chunk_size)
    compare(run_reference(p), out, TOL_F64 if dtype == torch.float64 else TOL_F32)


def test_scale_and_real_everything() -> None:
    p = make_problem(B=2, L=33, H=3, dk=5, dv=7, complex_a=False, with_h0=False, seed=9)
    ref = run_reference(p)
    ref = {k: v * 0.5 for k, v in ref.items() if k in ("y",)}
    for mode in LINEAR_MODES:
        out = run_mode(p, mode, torch.float64, scale=0.5)
        compare(ref, {"y": out["y"]}, TOL_F64)
        assert out["final_state"].is_complex()


@pytest.mark.parametrize("mode", LINEAR_MODES)
@pytest.mark.parametrize(
    ("L", "dk", "per_head", "complex_a"),
    [
        pytest.param(L, dk, ph, ca, id=f"L{L}-d{dk}-{'head' if ph else 'key'}-{'c' if ca else 'r'}")
        for L, dk, ph, ca in itertools.product((1, 7, 100, 257), (1, 16), (False, True), (False, True))
        if not (ph and dk == 1)
    ],
)
def test_direct_a_matches_reference_float64(
    mode: str, L: int, dk: int, per_head: bool, complex_a: bool
) -> None:
    """Transitions passed as ``a`` (not its log), |a| ~ U(0, 1)."""
    p = make_problem(
        B=1, L=L, H=3, dk=dk, dv=dk, per_head=per_head, complex_a=complex_a, use_log=False, seed=L
    )
    compare(run_reference(p), run_mode(p, mode, torch.float64), TOL_F64)


class _StateSizedAllocations(TorchDispatchMode):
    """Counts the tensors of at least ``nbytes`` that aten ops return in fresh storage (not views
    of an argument, not in-place results, not ``out=`` buffers)."""

    def __init__(self, nbytes: int) -> None:
        super().__init__()
        self.nbytes = nbytes
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        given = {t.untyped_storage().data_ptr() for t in tensors}
        for t in tree_leaves(out):
            fresh = isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in given
            if fresh and t.untyped_storage().nbytes() >= self.nbytes:
                self.count += 1
        return out


@pytest.mark.parametrize("complex_a", [False, True], ids=["real", "complex"])
def test_recurrent_without_gradients_keeps_one_running_state(complex_a: bool) -> None:
    """Under no_grad the recurrent loop updates one state in place: a state-sized allocation per
    step (three before: a ⊙ h, + kᵀv, kᵀv) fragmented the heap by about one state per step (issue
    14: 4.8 GiB at L = 16384, dk = dv = 64, float64). The same bits as with autograd."""
    p = make_problem(B=1, L=64, H=2, dk=8, dv=8, complex_a=complex_a, with_h0=complex_a, seed=3)
    args = (p.q, p.k, p.v)
    kw = {"log_a": p.trans, "mode": "recurrent", "initial_state": p.h0, "output_final_state": True}
    with_grad = gate_loop(*(t.clone().requires_grad_(True) for t in args), **kw)
    state_bytes = 2 * 8 * 8 * (16 if complex_a else 8)  # one (B, H, dk, dv) state
    counter = _StateSizedAllocations(state_bytes)
    with torch.no_grad(), counter:
        without = gate_loop(*args, **kw)
    assert counter.count < 16, f"{counter.count} state-sized allocations for L = 64 steps"
    assert torch.equal(without[0], with_grad[0].detach())
    assert torch.equal(without[1], with_grad[1].detach())
