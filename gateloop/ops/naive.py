"""The float64 loop that *is* the spec (paper eq 7-8). Slow on purpose; the oracle of the tests.

h_n = a_n ⊙ h_{n-1} + k_nᵀ v_n        (a_n scales the rows of the complex [dk, dv] state)
y_n = Re(scale · q_n h_n)
"""

from __future__ import annotations

import torch
from torch import Tensor


def gate_loop_naive(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    *,
    scale: float = 1.0,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Reference GateLoop in complex128, one step at a time.

    Args:
        q: r|c(B L H dk) output gates.   k: r|c(B L H dk) input gates.   v: r(B L H dv) values.
        a: r|c(B L H dk) or r|c(B L H 1) state transitions.
        scale: multiplies the output.
        initial_state: r|c(B H dk dv) or None (zeros).

    Returns:
        y: r(B L H dv) float64, final_state: c(B H dk dv) complex128.

    Example:
        >>> q, k, v = torch.randn(3, 1, 5, 2, 4, dtype=torch.float64)
        >>> a = torch.rand(1, 5, 2, 4, dtype=torch.float64)
        >>> y, h = gate_loop_naive(q, k, v, a)
        >>> y.shape, h.shape
        (torch.Size([1, 5, 2, 4]), torch.Size([1, 2, 4, 4]))
    """
    cdtype = torch.complex128
    q, k, a = q.to(cdtype), k.to(cdtype), a.to(cdtype)
    v = v.to(torch.float64)
    B, _, H, dk = q.shape
    dv = v.shape[-1]
    h = torch.zeros(B, H, dk, dv, dtype=cdtype, device=q.device)  # (B, H, dk, dv)
    if initial_state is not None:
        h = h + initial_state.to(cdtype)
    ys = []
    for q_n, k_n, v_n, a_n in zip(q.unbind(1), k.unbind(1), v.unbind(1), a.unbind(1), strict=True):
        kv = k_n[..., :, None] * v_n[..., None, :]  # (B, H, dk, dv)
        h = a_n[..., None] * h + kv  # (B, H, dk, dv)
        y = torch.einsum("bhd,bhde->bhe", q_n, h).real * scale  # (B, H, dv)
        ys.append(y)
    return torch.stack(ys, dim=1), h  # (B, L, H, dv), (B, H, dk, dv)
