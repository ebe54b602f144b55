"""One recurrent step (paper eq 7-8) for O(1)-per-token generation."""

from __future__ import annotations

import torch
from torch import Tensor

from gateloop.ops._inputs import complex_dtype_of, validate_step_inputs


def gate_loop_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor | None = None,
    *,
    log_a: Tensor | None = None,
    state: Tensor | None,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Advance the GateLoop state by one token: h' = a ⊙ h + kᵀ v, y = Re(scale · q h').

    Args:
        q: r|c(B H dk) output gate.   k: r|c(B H dk) input gate.   v: r(B H dv) value.
        a: r|c(B H dk) or r|c(B H 1) transition, or ``log_a`` (its complex logarithm), not both.
        state: c(B H dk dv) the state after the previous token (``final_state`` of a prefill),
            or None for the zero state.
        scale: output scale, default 1.0.

    Returns:
        y: r(B H dv) in v's dtype, new_state: c(B H dk dv) (complex64, or complex128 for float64).

    Example:
        >>> import torch
        >>> from gateloop import gate_loop_step
        >>> q, k, v = torch.randn(3, 2, 4, 8)
        >>> y, h = gate_loop_step(q, k, v, log_a=-torch.rand(2, 4, 8), state=None)
        >>> y, h = gate_loop_step(q, k, v, log_a=-torch.rand(2, 4, 8), state=h)
        >>> y.shape, h.shape
        (torch.Size([2, 4, 8]), torch.Size([2, 4, 8, 8]))
    """
    inputs = validate_step_inputs(q, k, v, a, log_a, state, scale)
    cdtype = complex_dtype_of(inputs.compute_dtype)
    a_t = inputs.transitions.as_a().to(cdtype)[..., None]  # (B, H, dk|1, 1)
    kv = inputs.k.to(cdtype)[..., :, None] * inputs.v[..., None, :]  # (B, H, dk, dv)
    h = kv if inputs.initial_state is None else a_t * inputs.initial_state + kv  # (B, H, dk, dv)
    y = torch.einsum("bhd,bhde->bhe", inputs.q.to(cdtype), h).real * inputs.scale  # (B, H, dv)
    return y.to(inputs.out_dtype), h
