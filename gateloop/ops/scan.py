"""Scan mode: the associative scan of paper eq 12-13, O(L log L) work, no per-step Python loop.

Leaves are (a_n, k_nᵀ v_n); the operator is (p1, p2) • (q1, q2) = (p1 ⊙ q1, q1 ⊙ p2 + q2).
A Hillis-Steele (inclusive, log2 L rounds) scan over the time axis: every round combines each
element with the one `offset` steps earlier, the first `offset` elements with the identity (1, 0).
It materialises the full state (B, H, L, dk, dv) per round, as the paper's JAX code does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gateloop.ops._inputs import Transitions, complex_dtype_of
from gateloop.ops._nonfinite import causal_nonfinite


def associative_scan_linear(a: Tensor, x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Inclusive scan of h_n = a_n h_{n-1} + x_n from h_0 = 0 along ``dim`` (Hillis-Steele).

    Returns ``(A, X)``: the prefix products Π_{j<=n} a_j and the states h_n. ``a`` broadcasts
    against ``x`` on every dim but ``dim``.
    """
    L = x.shape[dim]
    offset = 1
    while offset < L:
        a_prev = _shift(a, offset, dim, fill=1.0)  # a_{n-offset}, identity 1 before the start
        x_prev = _shift(x, offset, dim, fill=0.0)  # x_{n-offset}, identity 0 before the start
        x = a * x_prev + x  # (q1 ⊙ p2 + q2) with p = earlier element, q = this one
        a = a * a_prev  # (p1 ⊙ q1)
        offset *= 2
    return a, x


def _shift(t: Tensor, offset: int, dim: int, fill: float) -> Tensor:
    """t shifted ``offset`` steps later along ``dim``, the first ``offset`` entries set to ``fill``."""
    head_shape = list(t.shape)
    head_shape[dim] = offset
    head = torch.full(head_shape, fill, dtype=t.dtype, device=t.device)
    return torch.cat([head, t.narrow(dim, 0, t.shape[dim] - offset)], dim=dim)


@causal_nonfinite
def gate_loop_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    transitions: Transitions,
    *,
    scale: float,
    initial_state: Tensor | None,
    output_final_state: bool,
) -> tuple[Tensor, Tensor | None]:
    """q, k: r|c(B L H dk); v: r(B L H dv); transitions (B L H dk|1); state c(B H dk dv)."""
    a = transitions.as_a()[..., None]  # (B, L, H, dk|1, 1)
    kv = k[..., :, None] * v[..., None, :]  # (B, L, H, dk, dv)
    if a.is_complex() or q.is_complex():
        # one complex dtype for the whole scan: torch ops do not mix real and complex operands
        kv = kv.to(complex_dtype_of(v.dtype))
    prefix, h = associative_scan_linear(a, kv, dim=1)  # (B, L, H, dk|1, 1), (B, L, H, dk, dv)
    if initial_state is not None:
        h = h + prefix * initial_state[:, None]  # (B, L, H, dk, dv): Π_{j<=n} a_j ⊙ h_0
    qh = torch.einsum("blhd,blhde->blhe", q.to(h.dtype), h)  # (B, L, H, dv)
    y = (qh.real if qh.is_complex() else qh) * scale
    final = h[:, -1].to(complex_dtype_of(v.dtype)) if output_final_state else None
    return y, final
