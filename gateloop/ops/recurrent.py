"""Recurrent mode: the O(L) loop of paper eq 7-8 in the compute precision.

One Python step per token on a (B, H, dk, dv) state. Real arithmetic when nothing is complex
(real q, k, transitions and initial state), complex otherwise. Without autograd (``torch.no_grad()``
or no input requiring a gradient) one running state is updated in place.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gateloop.ops._inputs import Transitions, complex_dtype_of
from gateloop.ops._nonfinite import causal_nonfinite


def _steps_with_autograd(q: Tensor, k: Tensor, v: Tensor, a: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """The loop as autograd records it: a fresh state per step (each one saved for the backward).

    q: (B, L, H, dk) in the state's dtype; k, v, a as in ``gate_loop_recurrent``; h: (B, H, dk, dv).
    Returns the unscaled outputs (B, L, H, dv) and the last state.
    """
    ys = []
    # unbind once: indexing [:, n] in the loop would cost a full-size zero fill per step in the
    # backward (O(L²) memory traffic)
    for q_n, k_n, v_n, a_n in zip(q.unbind(1), k.unbind(1), v.unbind(1), a.unbind(1), strict=True):
        kv = k_n[..., :, None] * v_n[..., None, :]  # (B, H, dk, dv)
        h = a_n[..., None] * h + kv  # (B, H, dk, dv)
        y = torch.einsum("bhd,bhde->bhe", q_n, h)  # (B, H, dv)
        ys.append(y.real if y.is_complex() else y)
    return torch.stack(ys, dim=1), h  # (B, L, H, dv), (B, H, dk, dv)


def _steps_in_place(q: Tensor, k: Tensor, v: Tensor, a: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """The same operations without autograd, on one running state (``h``, updated in place).

    A fresh (B, H, dk, dv) state and kᵀv every step, with the small per-step outputs (alive until
    the end) carved out of the freed states, fragment the heap: the process grew by about one
    state per step although no old state was referenced (16 heads of 64 x 64 float64 at
    L = 16384: +8.2 GiB; this loop: +0.27 GiB, the inputs' and outputs' own size). Here the state
    and the kᵀv buffer are allocated once and the outputs go into one (B, L, H, dv) tensor. The
    same operations in the same order as the autograd loop: the same bits.
    """
    B, L, H, _ = q.shape
    y = torch.empty(B, L, H, v.shape[-1], dtype=v.dtype, device=v.device)  # (B, L, H, dv)
    kv = torch.empty(h.shape, dtype=torch.result_type(k, v), device=v.device)  # (B, H, dk, dv)
    for n, (q_n, k_n, v_n, a_n) in enumerate(
        zip(q.unbind(1), k.unbind(1), v.unbind(1), a.unbind(1), strict=True)
    ):
        torch.mul(k_n[..., :, None], v_n[..., None, :], out=kv)  # (B, H, dk, dv)
        # a ⊙ h with a first, as in the autograd loop: complex products are not bitwise symmetric
        torch.mul(a_n[..., None], h, out=h)  # (B, H, dk, dv)
        h.add_(kv)  # (B, H, dk, dv): h <- a ⊙ h + kᵀv
        y_n = torch.einsum("bhd,bhde->bhe", q_n, h)  # (B, H, dv)
        y[:, n] = y_n.real if y_n.is_complex() else y_n
    return y, h


@causal_nonfinite
def gate_loop_recurrent(
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
    a = transitions.as_a()  # (B, L, H, dk|1), exact zeros stay zeros
    B, _, H, dk = q.shape
    dv = v.shape[-1]
    real_dtype = v.dtype
    needs_complex = q.is_complex() or k.is_complex() or a.is_complex() or initial_state is not None
    state_dtype = complex_dtype_of(real_dtype) if needs_complex else real_dtype
    h = torch.zeros(B, H, dk, dv, dtype=state_dtype, device=v.device)  # (B, H, dk, dv)
    if initial_state is not None:
        h = h + initial_state  # a new tensor: the in-place loop never writes to the caller's state
    inputs = (q.to(state_dtype), k, v, a, h)
    with_autograd = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, a, h))
    y, h = _steps_with_autograd(*inputs) if with_autograd else _steps_in_place(*inputs)
    y = y * scale  # (B, L, H, dv)
    final = h.to(complex_dtype_of(real_dtype)) if output_final_state else None
    return y, final
