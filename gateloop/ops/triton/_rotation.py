"""Complex GateLoop as a real gated linear recurrence: phases, doubled q/k, state conversion.

docs/numerics.md, 'Doubled keys': with log a = ℓ + iθ, Φ_n = Σ_{j≤n} θ_j (per sequence) and
w_n = e^{-iΦ_n} h_n, the recurrence becomes  w_n = e^{ℓ_n} ⊙ w_{n-1} + (k_n e^{-iΦ_n})ᵀ v_n, whose
real and imaginary halves S = [Re w; Im w] (2dk x dv) are a *real* gated linear recurrence with
key k' = [Re B, Im B] (B = k e^{-iΦ}), gate [ℓ, ℓ] and query q' = [Re A, -Im A] (A = q e^{iΦ}):
y_n = Re(q_n h_n) = q'_n · S_n. w_0 = h_0 (Φ_0 = 0) and h_L = e^{iΦ_L} w_L.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from gateloop.ops._doubled_keys import realify_rotated
from gateloop.ops._inputs import real_dtype_of


class RealProblem(NamedTuple):
    """q', k' [B, L, H, dk'] and the per-sequence cumulative phase (None when nothing rotates)."""

    q: Tensor
    k: Tensor
    phi: Tensor | None  # (B, L, H, dk|1) float64 in [0, 2π)
    doubled: bool  # dk' = 2dk, else dk' = dk (q, k and a all real)


def sequence_cumsum(x: Tensor, cu_seqlens: Tensor | None) -> Tensor:
    """Σ_{j≤n} x_j along dim 1 in float64, restarting at every sequence start of ``cu_seqlens``.

    x: (B, L, H, d). Returns (B, L, H, d) float64.
    """
    # why float64: the sums grow with L; a float32 phase sum errs by eps·|Φ| ~ 1e-3 rad at L ~ 1e4
    # (docs/numerics.md, 'Phase precision')
    total = torch.cumsum(x.to(torch.float64), dim=1)  # (B, L, H, d)
    if cu_seqlens is None:
        return total
    before = F.pad(total, (0, 0, 0, 0, 1, 0))[
        :, cu_seqlens[:-1].long()
    ]  # (1, N, H, d): sum before each start
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()  # (N,)
    return total - torch.repeat_interleave(before, lengths, dim=1)  # (1, L, H, d)


def at_sequence_ends(x: Tensor, cu_seqlens: Tensor | None) -> Tensor:
    """x at every sequence's last position: (B, L, H, d) -> (N, H, d) (N = B without cu_seqlens)."""
    if cu_seqlens is None:
        return x[:, -1]  # (B, H, d)
    return x[0, cu_seqlens[1:].long() - 1]  # (N, H, d)


def cumulative_phase(theta: Tensor, cu_seqlens: Tensor | None) -> Tensor:
    """Φ per sequence as a float64 cumulative sum reduced mod 2π: (B, L, H, d) float64."""
    # why the reduction: cos/sin then run in the working dtype on arguments in [0, 2π), where their
    # rounding does not grow with L
    return torch.remainder(sequence_cumsum(theta, cu_seqlens), 2 * math.pi)  # (B, L, H, d)


def realify(q: Tensor, k: Tensor, phase: Tensor | None, cu_seqlens: Tensor | None) -> RealProblem:
    """q' = [Re A, -Im A], k' = [Re B, Im B] with A = q e^{iΦ}, B = k e^{-iΦ}; undoubled when all real.

    q, k: (B, L, H, dk) real or complex; phase: (B, L, H, dk|1) real θ, or None. Φ is the
    per-sequence float64 cumulative phase; the transform itself is ``_doubled_keys.realify_rotated``.
    """
    phi = None if phase is None else cumulative_phase(phase, cu_seqlens)  # (B, L, H, d) float64
    real = real_dtype_of(q.dtype)
    # why the cast: cos/sin of arguments in [0, 2π) are accurate in the working precision
    rotation = None if phi is None else (torch.cos(phi).to(real), torch.sin(phi).to(real))  # (B, L, H, d)
    q2, k2, doubled = realify_rotated(q, k, rotation)  # (B, L, H, dk')
    return RealProblem(q2, k2, phi, doubled)


def state_to_real(h0: Tensor, doubled: bool) -> Tensor:
    """Complex (N, H, dk, dv) -> float32 (N, H, dk', dv): [Re h0; Im h0], or Re h0 undoubled."""
    # why float32: fla keeps recurrent states in float32 whatever the input dtype
    if doubled:
        return torch.cat([h0.real, h0.imag], dim=-2).float()  # (N, H, 2dk, dv)
    return h0.real.float()  # (N, H, dk, dv); Im h0 only decays (see final_state_to_complex)


def final_state_to_complex(
    S: Tensor,
    problem: RealProblem,
    h0: Tensor | None,
    log_mag: Tensor,
    cu_seqlens: Tensor | None,
) -> Tensor:
    """The real final state S (N, H, dk', dv) back to the complex h_L (N, H, dk, dv) complex64.

    Doubled: h_L = e^{iΦ_L} (S_top + i S_bottom). Undoubled (everything real): Re h_L = S, and the
    imaginary part of a complex initial state only decays: Im h_L = e^{G_L} Im h0 (G = Σ ℓ).
    """
    if problem.doubled:
        dk = S.shape[-2] // 2
        w = torch.complex(S[..., :dk, :], S[..., dk:, :])  # (N, H, dk, dv)
        if problem.phi is None:
            return w
        phi_end = at_sequence_ends(problem.phi, cu_seqlens).float()  # (N, H, dk|1)
        return w * torch.polar(torch.ones_like(phi_end), phi_end)[..., None]  # (N, H, dk, dv)
    imag = torch.zeros_like(S)
    if h0 is not None:
        G_end = at_sequence_ends(sequence_cumsum(log_mag, cu_seqlens), cu_seqlens)  # (N, H, dk|1) float64
        # why float32: e^{G_L} <= 1 is exact enough once the sum itself was taken in float64
        imag = torch.exp(G_end).float()[..., None] * h0.imag.float()  # (N, H, dk, dv)
    return torch.complex(S.float(), imag)
