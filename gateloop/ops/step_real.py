"""One recurrent step in real arithmetic: the complex state as a trailing (real, imaginary) pair.

``gate_loop_step`` keeps the state complex. Runtimes without complex tensors (ONNX, most
inference engines) need the same step on real tensors: with a = |a| e^{iθ} and h = h_re + i h_im,

    a ⊙ h = (|a| cos θ · h_re − |a| sin θ · h_im) + i (|a| cos θ · h_im + |a| sin θ · h_re)
    h'    = a ⊙ h + kᵀv            (q, k, v real: kᵀv only touches the real part)
    y     = Re(scale · q h') = scale · q h'_re

The transition comes as its two real parts (log|a|, θ), what the layer computes before packing
them into a complex log; |a| = exp(log|a|) keeps a gate of exactly 0 (log|a| = −inf) exactly 0.
Tested against ``gate_loop_step`` (the complex reference) in tests/test_onnx_export.py.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gateloop._validation import check_tensor


def gate_loop_step_real(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    log_abs_a: Tensor,
    arg_a: Tensor | None,
    state: Tensor | None,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Advance a real-stored GateLoop state by one token.

    Args:
        q, k: r(B H dk) output and input gates (real, as the layer's projections give them).
        v: r(B H dv) value.
        log_abs_a: r(B H dk|1) log|a|.   arg_a: r(B H dk|1) the phase θ, or None (real a = |a|).
        state: r(B H dk dv 2) the previous state's (real, imaginary) parts, or None for zero.
        scale: output scale.

    Returns:
        y: r(B H dv), new_state: r(B H dk dv 2), both in v's dtype.
    """
    _check_inputs(q, k, v, log_abs_a, arg_a, state)
    dtype = v.dtype
    kv = k.to(dtype)[..., :, None] * v[..., None, :]  # (B, H, dk, dv)
    if state is None:
        h_re, h_im = kv, torch.zeros_like(kv)  # (B, H, dk, dv) each
    else:
        magnitude = torch.exp(log_abs_a.to(dtype))[..., None]  # (B, H, dk|1, 1)
        s_re, s_im = state[..., 0], state[..., 1]  # (B, H, dk, dv) each
        if arg_a is None:
            h_re, h_im = magnitude * s_re + kv, magnitude * s_im  # (B, H, dk, dv) each
        else:
            theta = arg_a.to(dtype)[..., None]  # (B, H, dk|1, 1)
            a_re, a_im = magnitude * torch.cos(theta), magnitude * torch.sin(theta)  # (B, H, dk|1, 1)
            h_re = a_re * s_re - a_im * s_im + kv  # (B, H, dk, dv)
            h_im = a_re * s_im + a_im * s_re  # (B, H, dk, dv)
    y = torch.einsum("bhd,bhde->bhe", q.to(dtype), h_re) * scale  # (B, H, dv)
    return y, torch.stack((h_re, h_im), dim=-1)  # (B, H, dv), (B, H, dk, dv, 2)


def _check_inputs(
    q: Tensor, k: Tensor, v: Tensor, log_abs_a: Tensor, arg_a: Tensor | None, state: Tensor | None
) -> None:
    """Shapes and kinds of ``gate_loop_step_real``'s arguments; a ValueError naming the one that is off."""
    for name, t in (("q", q), ("k", k), ("v", v), ("log_abs_a", log_abs_a), ("arg_a", arg_a)):
        if t is not None:
            _check_real(name, t, 3)
    B, H, dk = q.shape
    if k.shape != q.shape or v.shape[:2] != (B, H):
        raise ValueError(f"q, k must be [B, H, dk] and v [B, H, dv] alike, got {_shapes(q=q, k=k, v=v)}")
    if log_abs_a.shape[:2] != (B, H) or log_abs_a.shape[-1] not in (1, dk):
        got = _shapes(log_abs_a=log_abs_a)
        raise ValueError(f"log_abs_a must have shape [B, H, dk|1] = [{B}, {H}, {dk}|1], got {got}")
    if arg_a is not None and arg_a.shape != log_abs_a.shape:
        got = _shapes(arg_a=arg_a, log_abs_a=log_abs_a)
        raise ValueError(f"arg_a must have log_abs_a's shape, got {got}")
    expected = (B, H, dk, v.shape[-1], 2)
    if state is not None and tuple(state.shape) != expected:
        got = _shapes(state=state)
        raise ValueError(f"state must have shape [B, H, dk, dv, 2] = {list(expected)}, got {got}")


def _check_real(name: str, t: object, ndim: int) -> None:
    t = check_tensor(name, t)
    if t.is_complex() or not t.is_floating_point() or t.ndim != ndim:
        got = f"{t.dtype} {tuple(t.shape)}"
        raise ValueError(f"{name} must be a real floating-point tensor of rank {ndim}, got {got}")


def _shapes(**tensors: Tensor) -> str:
    return ", ".join(f"{name} {tuple(t.shape)}" for name, t in tensors.items())
