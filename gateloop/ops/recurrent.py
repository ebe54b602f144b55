"""Recurrent mode: the O(L) loop of paper eq 7-8 in the compute precision.

One Python step per token on a (B, H, dk, dv) state. Real arithmetic when nothing is complex
(real q, k, transitions and initial state), complex otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gateloop.ops._inputs import Transitions, complex_dtype_of
from gateloop.ops._nonfinite import causal_nonfinite


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
        h = h + initial_state
    ys = []
    # unbind once: indexing [:, n] in the loop would cost a full-size zero fill per step in the
    # backward (O(L²) memory traffic)
    steps = zip(q.to(state_dtype).unbind(1), k.unbind(1), v.unbind(1), a.unbind(1), strict=True)
    for q_n, k_n, v_n, a_n in steps:
        kv = k_n[..., :, None] * v_n[..., None, :]  # (B, H, dk, dv)
        h = a_n[..., None] * h + kv  # (B, H, dk, dv)
        y = torch.einsum("bhd,bhde->bhe", q_n, h)  # (B, H, dv)
        ys.append(y.real if y.is_complex() else y)
    y = torch.stack(ys, dim=1) * scale  # (B, L, H, dv)
    final = h.to(complex_dtype_of(real_dtype)) if output_final_state else None
    return y, final
