"""Doubled keys: complex (or rotated) q, k as real vectors whose dot product is Re(q e^{iΦ_n} k e^{-iΦ_m}).

docs/numerics.md, 'Doubled keys': with A = q e^{iΦ}, B = k e^{-iΦ}, q' = [Re A, -Im A] and
k' = [Re B, Im B] give q'·k' = Re(A·B), so complex GateLoop is real gated linear attention over
2·dk key dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gateloop.ops._inputs import complex_dtype_of


def realify(q: Tensor, k: Tensor, phase_cum: Tensor | None) -> tuple[Tensor, Tensor, bool]:
    """(q', k') with q'·k' = Re(q e^{iΦ_n} · k e^{-iΦ_m}); doubled only when something rotates."""
    if phase_cum is None and not q.is_complex() and not k.is_complex():
        return q, k, False
    if not q.is_complex() and not k.is_complex():
        # real q, k: [q cos Φ, -q sin Φ] in real arithmetic (PyTorch's complex kernels are ~4x
        # slower on CPU, forward and backward)
        cos, msin = torch.cos(phase_cum), -torch.sin(phase_cum)  # (..., c, dk|1)
        q2 = torch.cat([q * cos, q * msin], dim=-1)  # (B, H, N, c, 2dk)
        k2 = torch.cat([k * cos, k * msin], dim=-1)  # (B, H, N, c, 2dk)
        return q2, k2, True
    cdtype = complex_dtype_of(q.real.dtype if q.is_complex() else q.dtype)
    if phase_cum is None:
        rot = torch.ones((), dtype=cdtype, device=q.device)
    else:
        rot = torch.complex(torch.cos(phase_cum), torch.sin(phase_cum))  # (..., c, d): e^{iΦ}
    A = q.to(cdtype) * rot  # (B, H, N, c, dk)
    Bk = k.to(cdtype) * rot.conj()  # (B, H, N, c, dk)
    q2 = torch.cat([A.real, -A.imag], dim=-1)  # (B, H, N, c, 2dk)
    k2 = torch.cat([Bk.real, Bk.imag], dim=-1)  # (B, H, N, c, 2dk)
    return q2, k2, True


def double_keys(t: Tensor, doubled: bool) -> Tensor:
    """Repeat a per-key-dim tensor over the two halves of the doubled key (broadcast if d == 1)."""
    if not doubled or t.shape[-1] == 1:
        return t
    return torch.cat([t, t], dim=-1)


def realify_backward(
    dq2: Tensor, dk2: Tensor, q: Tensor, k: Tensor, phase_cum: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gradients of ``realify(q, k, phase_cum)`` for (q, k, phase_cum) given those of (q', k').

    Complex gradients follow PyTorch's convention (dL/dRe z + i dL/dIm z); the phase's gradient is
    summed over the key dims when it is per head (last dim 1). None for the phase when absent.
    """
    if phase_cum is None and not q.is_complex() and not k.is_complex():
        return dq2, dk2, None
    dk = q.shape[-1]
    qa, qb, ka, kb = dq2[..., :dk], dq2[..., dk:], dk2[..., :dk], dk2[..., dk:]  # (..., dk) each
    if not q.is_complex() and not k.is_complex():
        # q' = [q cos Φ, -q sin Φ] (and k' alike): rotate the gradient back, and dΦ = -x (a sin + b cos)
        cos, sin = torch.cos(phase_cum), torch.sin(phase_cum)  # (..., c, dk|1)
        dq, dk_ = qa * cos - qb * sin, ka * cos - kb * sin  # (..., c, dk)
        d_phase = -(q * (qa * sin + qb * cos) + k * (ka * sin + kb * cos))  # (..., c, dk)
        return dq, dk_, _sum_to(d_phase, phase_cum)
    cdtype = complex_dtype_of(q.real.dtype if q.is_complex() else q.dtype)
    gA = torch.complex(qa, -qb)  # (..., dk): d/dA of A = q e^{iΦ}, from q' = [Re A, -Im A]
    gB = torch.complex(ka, kb)  # (..., dk): d/dB of B = k e^{-iΦ}, from k' = [Re B, Im B]
    rot = None if phase_cum is None else torch.complex(torch.cos(phase_cum), torch.sin(phase_cum))
    dq = gA if rot is None else gA * rot.conj()  # (..., dk)
    dk_ = gB if rot is None else gB * rot  # (..., dk)
    dq = dq if q.is_complex() else dq.real
    dk_ = dk_ if k.is_complex() else dk_.real
    if rot is None:
        return dq, dk_, None
    g_rot = gA * q.to(cdtype).conj() + gB.conj() * k.to(cdtype)  # (..., dk): d/d e^{iΦ}
    d_phase = (g_rot * rot.conj()).imag  # (..., dk): d e^{iΦ}/dΦ = i e^{iΦ}
    return dq, dk_, _sum_to(d_phase, phase_cum)


def _sum_to(grad: Tensor, like: Tensor) -> Tensor:
    """A per-key-dim gradient (..., dk) summed to ``like``'s last dim (dk, or 1 for one per head)."""
    return grad.sum(dim=-1, keepdim=True) if like.shape[-1] == 1 and grad.shape[-1] != 1 else grad
