"""Doubled keys: complex (or rotated) q, k as real vectors whose dot product is Re(q e^{iΦ_n} k e^{-iΦ_m}).

docs/numerics.md, 'Doubled keys': with A = q e^{iΦ}, B = k e^{-iΦ}, q' = [Re A, -Im A] and
k' = [Re B, Im B] give q'·k' = Re(A·B), so complex GateLoop is real gated linear attention over
2·dk key dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gateloop.ops._inputs import complex_dtype_of, real_dtype_of


def realify(q: Tensor, k: Tensor, phase_cum: Tensor | None) -> tuple[Tensor, Tensor, bool]:
    """(q', k') with q'·k' = Re(q e^{iΦ_n} · k e^{-iΦ_m}); doubled only when something rotates.

    cos Φ, sin Φ are taken in ``phase_cum``'s dtype (a chunk-local sum, small enough for it).
    """
    rotation = None if phase_cum is None else (torch.cos(phase_cum), torch.sin(phase_cum))  # (..., c, dk|1)
    return realify_rotated(q, k, rotation)


def realify_rotated(
    q: Tensor, k: Tensor, rotation: tuple[Tensor, Tensor] | None
) -> tuple[Tensor, Tensor, bool]:
    """q' = [Re A, -Im A], k' = [Re B, Im B] with A = q e^{iΦ}, B = k e^{-iΦ}, and whether doubled.

    q, k: (..., dk) real or complex; rotation: (cos Φ, sin Φ), each (..., dk|1) in the dtype to
    compute in, or None (Φ = 0). Undoubled (q, k as given) when q, k are real and nothing rotates.
    In real arithmetic throughout: on the CPU, PyTorch's complex multiply rounds its last bit
    differently depending on the tensor's length (equal to this form at dk = 16, not at 5 or 37).
    """
    complex_qk = q.is_complex() or k.is_complex()
    if rotation is None and not complex_qk:
        return q, k, False
    if rotation is None:
        real = real_dtype_of(q.dtype)
        # Φ = 0: cos 1, sin 0, scalars that broadcast
        rotation = (torch.ones((), dtype=real, device=q.device), torch.zeros((), dtype=real, device=q.device))
    cos, sin = rotation
    if not complex_qk:
        q2 = torch.cat([q * cos, -q * sin], dim=-1)  # (..., 2dk)
        k2 = torch.cat([k * cos, -k * sin], dim=-1)  # (..., 2dk)
        return q2, k2, True
    qr, qi = (q.real, q.imag) if q.is_complex() else (q, torch.zeros_like(q))
    kr, ki = (k.real, k.imag) if k.is_complex() else (k, torch.zeros_like(k))
    a_re, a_im = qr * cos - qi * sin, qr * sin + qi * cos  # (..., dk): A = q e^{iΦ}
    b_re, b_im = kr * cos + ki * sin, ki * cos - kr * sin  # (..., dk): B = k e^{-iΦ}
    q2 = torch.cat([a_re, -a_im], dim=-1)  # (..., 2dk)
    k2 = torch.cat([b_re, b_im], dim=-1)  # (..., 2dk)
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
