"""``cu_seqlens`` (packed sequences) in the torch backend: every linear mode against the float64 loop
run on each sequence; and the argument's errors. (The Triton backend's varlen: test_triton.py.)"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from gateloop import gate_loop, gate_loop_naive

from helpers import TOL_F32, Problem, _collect, _leaves, compare, make_problem

OFFSETS = [0, 5, 70, 130]


def varlen_problem(d: int, *, per_head: bool = False, with_h0: bool = True, seed: int = 0) -> Problem:
    p = make_problem(B=1, L=OFFSETS[-1], H=2, dk=d, dv=d, per_head=per_head, with_h0=False, seed=seed)
    g = torch.Generator().manual_seed(seed)
    shape = (len(OFFSETS) - 1, 2, d, d)  # (N, H, dk, dv)

    def crandn() -> Tensor:
        f64 = torch.float64
        return torch.complex(
            torch.randn(*shape, generator=g, dtype=f64), torch.randn(*shape, generator=g, dtype=f64)
        )

    p.h0 = crandn() if with_h0 else None
    p.gh = crandn()
    return p


def varlen_reference(p: Problem, offsets: list[int], *, with_final: bool = True) -> dict[str, Tensor]:
    """The float64 loop on each sequence with its own initial state; gradients by autograd."""
    leaves = _leaves(p, torch.float64)
    a = torch.exp(leaves["trans"]) if p.use_log else leaves["trans"]
    ys, finals = [], []
    for i, (s, e) in enumerate(itertools.pairwise(offsets)):
        h0 = leaves["h0"][i : i + 1] if "h0" in leaves else None
        q, k, v = (leaves[n][:, s:e] for n in ("q", "k", "v"))
        y, h = gate_loop_naive(q, k, v, a[:, s:e], initial_state=h0)
        ys.append(y)
        finals.append(h)
    return _collect(torch.cat(ys, dim=1), torch.cat(finals, dim=0) if with_final else None, leaves, p)


def run_varlen(p: Problem, mode: str, *, with_final: bool = True, **kw: object) -> dict[str, Tensor]:
    leaves = _leaves(p, torch.float32)
    key = "log_a" if p.use_log else "a"
    y, final = gate_loop(
        leaves["q"],
        leaves["k"],
        leaves["v"],
        mode=mode,
        initial_state=leaves.get("h0"),
        output_final_state=with_final,
        backend="torch",
        cu_seqlens=torch.tensor(OFFSETS, dtype=torch.int32),
        **{key: leaves["trans"]},
        **kw,
    )
    return _collect(y, final, leaves, p)


@pytest.mark.parametrize("mode", ["chunk", "recurrent", "scan", "attention"])
@pytest.mark.parametrize("d", [1, 8])
def test_varlen_with_states(mode: str, d: int) -> None:
    """Per-sequence initial and final states: one call per sequence."""
    p = varlen_problem(d, seed=d)
    compare(varlen_reference(p, OFFSETS), run_varlen(p, mode), TOL_F32)


@pytest.mark.parametrize("mode", ["chunk", "recurrent", "attention"])
@pytest.mark.parametrize(("d", "per_head", "use_log"), [(1, False, True), (8, False, True), (8, True, False)])
def test_varlen_resets(mode: str, d: int, per_head: bool, use_log: bool) -> None:
    """No states: one call with a = 0 at every sequence start."""
    p = varlen_problem(d, per_head=per_head, with_h0=False, seed=d + 1)
    if not use_log:
        p.trans, p.use_log = torch.exp(p.trans), False
    compare(varlen_reference(p, OFFSETS, with_final=False), run_varlen(p, mode, with_final=False), TOL_F32)


def test_varlen_softmax_runs_each_sequence_alone() -> None:
    p = varlen_problem(4, with_h0=False, seed=3)
    q, k, v = (t.float() for t in (p.q, p.k, p.v))
    la = p.trans.to(torch.complex64)
    cu = torch.tensor(OFFSETS, dtype=torch.int32)
    y, _ = gate_loop(q, k, v, log_a=la, mode="softmax", cu_seqlens=cu)
    for s, e in itertools.pairwise(OFFSETS):
        y_one, _ = gate_loop(q[:, s:e], k[:, s:e], v[:, s:e], log_a=la[:, s:e], mode="softmax")
        torch.testing.assert_close(y[:, s:e], y_one)


def _inputs(B: int = 1, L: int = 10) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    q, k, v = torch.randn(3, B, L, 2, 4)
    return q, k, v, -torch.rand(B, L, 2, 4)


@pytest.mark.parametrize(
    ("cu", "error", "match"),
    [
        (torch.tensor([1, 4, 10]), ValueError, "must start at 0"),
        (torch.tensor([0, 6, 4, 10]), ValueError, "strictly increasing"),
        (torch.tensor([0, 4, 4, 10]), ValueError, "strictly increasing"),
        (torch.tensor([0, 4, 9]), ValueError, "must end at L = 10"),
        (torch.tensor([[0, 10]]), ValueError, "1-D tensor"),
        (torch.tensor([0.0, 10.0]), TypeError, "cu_seqlens must have dtype"),
        ([0, 10], TypeError, "cu_seqlens must be a torch.Tensor"),
        (torch.tensor([0, 10], device="meta"), ValueError, "cu_seqlens is on meta but q is on cpu"),
    ],
)
def test_cu_seqlens_errors(cu: object, error: type[Exception], match: str) -> None:
    q, k, v, la = _inputs()
    with pytest.raises(error, match=match):
        gate_loop(q, k, v, log_a=la, cu_seqlens=cu)  # type: ignore[arg-type]


def test_cu_seqlens_needs_a_batch_of_one() -> None:
    q, k, v, la = _inputs(B=2)
    with pytest.raises(ValueError, match="q must have B = 1, got B = 2"):
        gate_loop(q, k, v, log_a=la, cu_seqlens=torch.tensor([0, 4, 10]))


def test_cu_seqlens_initial_state_is_per_sequence() -> None:
    q, k, v, la = _inputs()
    with pytest.raises(ValueError, match=r"initial_state must have shape \[B, H, dk, dv\] = \(2, 2, 4, 4\)"):
        gate_loop(
            q, k, v, log_a=la, cu_seqlens=torch.tensor([0, 4, 10]), initial_state=torch.zeros(1, 2, 4, 4)
        )
