"""Surrogate attention mode (paper eq 14-21), O(L²).

    y_n = Re( Σ_{m<=n} (q_n · (k_m ⊙ Π_{j=m+1..n} a_j)) v_m ) · scale

The paper writes Π_{j<=n} a_j / Π_{j<=m} a_j; dividing cumulative products overflows and gives
NaN for L >~ 100 (the official notebook does). Here the relative decay Π_{j=m+1..n} a_j is
exp((G_n - G_m) + i(Φ_n - Φ_m)) with G, Φ the cumulative log-magnitudes and phases, masked to
n >= m *before* exponentiating (every exponent is <= 0). G and Φ are accumulated in float64
whatever the compute dtype: over thousands of strongly decaying steps |G| reaches 1e5 and a
float32 difference G_n - G_m would lose its leading digits (docs/numerics.md, 'Attention mode:
relative decays').
"""

from __future__ import annotations

import torch
from torch import Tensor

from gateloop.ops._inputs import Transitions, complex_dtype_of
from gateloop.ops._nonfinite import causal_nonfinite


def cumulative_logs(transitions: Transitions) -> tuple[Tensor, Tensor | None]:
    """(G, Φ): float64 cumulative log-magnitudes and phases (B, L, H, d); Φ is None when real.

    why float64: see the module docstring (cancellation in G_n - G_m over long sequences).
    """
    log_mag, phase = transitions.as_log()  # (B, L, H, d) with d = dk or 1
    G = torch.cumsum(log_mag.to(torch.float64), dim=1)
    Phi = None if phase is None else torch.cumsum(phase.to(torch.float64), dim=1)
    return G, Phi


def surrogate_scores(q: Tensor, k: Tensor, G: Tensor, Phi: Tensor | None) -> Tensor:
    """Masked surrogate attention scores q_n · (k_m ⊙ Π_{j=m+1..n} a_j), zero above the diagonal.

    q, k: r|c(B L H dk); G, Φ from ``cumulative_logs``. Returns r|c(B H L L): real when q, k and
    the transitions are real.
    """
    real = q.dtype if not q.is_complex() else torch.float32 if q.dtype == torch.complex64 else torch.float64
    L = q.shape[1]
    G = G.transpose(1, 2)  # (B, H, L, d)
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()[..., None]  # (L, L, 1): n >= m
    dG = G[:, :, :, None, :] - G[:, :, None, :, :]  # (B, H, L_n, L_m, d)
    # mask before exp: above the diagonal G_n - G_m > 0 could overflow; -inf gives exp = 0 exactly
    dG = torch.where(causal, dG, torch.full_like(dG, float("-inf")))
    if Phi is None:
        decay = torch.exp(dG).to(real)  # (B, H, L, L, d)
    else:
        Phi = Phi.transpose(1, 2)  # (B, H, L, d)
        dPhi = Phi[:, :, :, None, :] - Phi[:, :, None, :, :]  # (B, H, L_n, L_m, d)
        dPhi = torch.where(causal, dPhi, torch.zeros_like(dPhi))
        decay = torch.exp(torch.complex(dG, dPhi)).to(complex_dtype_of(real))  # (B, H, L, L, d)
    dtype = decay.dtype if (decay.is_complex() or not q.is_complex()) else q.dtype
    qh = q.transpose(1, 2).to(dtype)  # (B, H, L, dk)
    kh = k.transpose(1, 2).to(dtype)  # (B, H, L, dk)
    decay = decay.to(dtype)
    if decay.shape[-1] == 1:  # one transition per head: the decay factors out of the key sum
        scores = (qh @ kh.transpose(-1, -2)) * decay[..., 0]  # (B, H, L, L)
    else:
        scores = torch.einsum("bhnd,bhmd,bhnmd->bhnm", qh, kh, decay)  # (B, H, L, L)
    # why where: above the diagonal the decay is 0, but q_n · k_m can overflow to inf and
    # inf · 0 = NaN would reach row n < m through scores @ v; selection keeps those entries 0
    return torch.where(causal[..., 0], scores, torch.zeros((), dtype=scores.dtype, device=scores.device))


def initial_state_readout(q: Tensor, G: Tensor, Phi: Tensor | None, initial_state: Tensor) -> Tensor:
    """Re(q_n diag(Π_{j<=n} a_j) h_0): the contribution of h_0 to every output. Returns r(B L H dv)."""
    Phi = torch.zeros_like(G) if Phi is None else Phi  # (B, L, H, d)
    prefix = torch.exp(torch.complex(G, Phi)).to(initial_state.dtype)  # (B, L, H, d): Π_{j<=n} a_j
    qa = q.to(initial_state.dtype) * prefix  # (B, L, H, dk)
    return torch.einsum("blhd,bhde->blhe", qa, initial_state).real  # (B, L, H, dv)


def final_state_from_scores(
    k: Tensor, v: Tensor, G: Tensor, Phi: Tensor | None, initial_state: Tensor | None
) -> Tensor:
    """h_L = Σ_m (k_m ⊙ Π_{j=m+1..L} a_j)ᵀ v_m + Π_{j<=L} a_j ⊙ h_0, in log space. c(B H dk dv)."""
    Phi = torch.zeros_like(G) if Phi is None else Phi  # (B, L, H, d)
    cdtype = complex_dtype_of(v.dtype)
    to_end = torch.exp(torch.complex(G[:, -1:] - G, Phi[:, -1:] - Phi)).to(cdtype)  # (B, L, H, d), exps <= 0
    h = torch.einsum("blhd,blhe->bhde", k.to(cdtype) * to_end, v.to(cdtype))  # (B, H, dk, dv)
    if initial_state is not None:
        total = torch.exp(torch.complex(G[:, -1], Phi[:, -1])).to(cdtype)  # (B, H, d)
        h = h + total[..., None] * initial_state
    return h


@causal_nonfinite
def gate_loop_attention(
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
    G, Phi = cumulative_logs(transitions)  # once: shared by the scores, h_0's readout and h_L
    scores = surrogate_scores(q, k, G, Phi)  # (B, H, L, L)
    scores = scores.real if scores.is_complex() else scores
    y = (scores @ v.transpose(1, 2)).transpose(1, 2)  # (B, L, H, dv)
    if initial_state is not None:
        y = y + initial_state_readout(q, G, Phi, initial_state)
    y = y * scale
    final = final_state_from_scores(k, v, G, Phi, initial_state) if output_final_state else None
    return y, final
