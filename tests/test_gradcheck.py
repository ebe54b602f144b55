"""torch.autograd.gradcheck in float64 on tiny shapes, every mode (incl. initial state)."""

from __future__ import annotations

import pytest
import torch

from gateloop import gate_loop

f64, c128 = torch.float64, torch.complex128


def _inputs(dk: int, dv: int, per_head: bool, strong: bool, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    B, L, H = 1, 5, 2
    q = torch.randn(B, L, H, dk, dtype=f64, generator=g)
    k = torch.randn(B, L, H, dk, dtype=f64, generator=g)
    v = torch.randn(B, L, H, dv, dtype=f64, generator=g)
    d = 1 if per_head else dk
    # strong: log|a| ~ -200, far past the chunk's safe range -> exact pairwise path
    mag = (
        -200 * torch.rand(B, L, H, d, dtype=f64, generator=g)
        if strong
        else -torch.rand(B, L, H, d, dtype=f64, generator=g)
    )
    log_a = torch.complex(mag, torch.randn(B, L, H, d, dtype=f64, generator=g))
    h0 = torch.randn(B, H, dk, dv, dtype=c128, generator=g)
    return tuple(t.requires_grad_() for t in (q, k, v, log_a, h0))


@pytest.mark.parametrize("mode", ["chunk", "recurrent", "scan", "attention", "softmax"])
@pytest.mark.parametrize(
    ("dk", "dv", "per_head"), [(2, 3, False), (2, 3, True), (1, 1, False)], ids=["key", "head", "siso"]
)
def test_gradcheck(mode: str, dk: int, dv: int, per_head: bool) -> None:
    q, k, v, log_a, h0 = _inputs(dk, dv, per_head, strong=False, seed=dk + dv)
    kw = {"chunk_size": 2} if mode == "chunk" else {}  # several chunks and a padded tail at L = 5

    if mode == "softmax":

        def fn(q, k, v, log_a):
            return gate_loop(q, k, v, log_a=log_a, mode=mode)[0]

        assert torch.autograd.gradcheck(fn, (q, k, v, log_a))
        return

    def fn(q, k, v, log_a, h0):
        y, h = gate_loop(q, k, v, log_a=log_a, mode=mode, initial_state=h0, output_final_state=True, **kw)
        return y, torch.view_as_real(h)

    assert torch.autograd.gradcheck(fn, (q, k, v, log_a, h0))


@pytest.mark.parametrize(("dk", "dv"), [(2, 3), (1, 1)], ids=["key", "siso"])
def test_gradcheck_chunk_exact_pairwise_path(dk: int, dv: int) -> None:
    q, k, v, log_a, h0 = _inputs(dk, dv, False, strong=True, seed=7)

    def fn(q, k, v, log_a, h0):
        y, h = gate_loop(q, k, v, log_a=log_a, initial_state=h0, output_final_state=True, chunk_size=4)
        return y, torch.view_as_real(h)

    assert torch.autograd.gradcheck(fn, (q, k, v, log_a, h0))


@pytest.mark.parametrize("mode", ["chunk", "recurrent", "scan", "attention"])
def test_gradcheck_direct_a(mode: str) -> None:
    """Gradients w.r.t. a complex ``a`` (not its log)."""
    q, k, v, log_a, h0 = _inputs(2, 2, False, strong=False, seed=3)
    a = torch.exp(log_a.detach()).requires_grad_()

    def fn(a, h0):
        y, h = gate_loop(q, k, v, a, mode=mode, initial_state=h0, output_final_state=True)
        return y, torch.view_as_real(h)

    assert torch.autograd.gradcheck(fn, (a, h0))
