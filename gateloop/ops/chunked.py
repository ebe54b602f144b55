"""Chunked mode (the fast default) for heads wider than one: real gated linear attention with doubled keys.

``gate_loop`` sends one-dimensional heads (dk = dv = 1) to ``siso_fused.py`` or ``siso_chunked.py``
instead; this form is correct for them too, only slower.

With log a = ℓ + iθ and chunk-local cumulative sums G = cumsum ℓ, Φ = cumsum θ, the complex
GateLoop output y_n = Re(q_n h_n) splits into an intra-chunk part and the contribution of the
state h carried in from the previous chunk (docs/numerics.md, 'Doubled keys' and 'Log-space decays'):

    A_n = q_n e^{iΦ_n},  B_m = k_m e^{-iΦ_m},   q'_n = [Re A_n, -Im A_n],  k'_m = [Re B_m, Im B_m]
    y_n = Σ_{m<=n in chunk} (q'_n ⊙ e^{G_n}) · (k'_m ⊙ e^{-G_m}) v_m  +  (q'_n ⊙ e^{G_n}) S
    S = [Re h; Im h]  (2dk x dv, real)
    at the chunk end:  h <- e^{iΦ_T} ⊙ (e^{G_T} S + Σ_m (k'_m e^{G_T - G_m})ᵀ v_m)

so everything is a real matmul with key dimension 2·dk (dk when q, k and a are all real). Every
exponent is <= 0 except e^{-G_m} in the diagonal block, which is used only in chunks whose
log-decay range is below ``safe_range``; other chunks get exact pairwise decays
exp(G_n - G_m), masked before the exponential and accumulated in float64. Non-finite inputs
are set aside first (``_nonfinite.causal_nonfinite``; docs/numerics.md, 'Non-finite inputs').
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from gateloop.ops._chunking import DEFAULT_CHUNK_SIZE, from_chunks, safe_range, to_chunks
from gateloop.ops._doubled_keys import double_keys, realify
from gateloop.ops._inputs import Transitions, complex_dtype_of
from gateloop.ops._nonfinite import causal_nonfinite
from gateloop.ops._unsafe_chunks import exact_unsafe_scores_op, with_exact_unsafe_scores


class _ChunkLogs(NamedTuple):
    """The transitions' log-decays cut into chunks, each (B, H, N, c, d) with d = dk or 1."""

    lc: Tensor  # log|a| (floored) per position
    G: Tensor  # its cumulative sum within each chunk: <= 0 for |a| <= 1
    Phi: Tensor | None  # the phase's cumulative sum within each chunk; None when nothing rotates


class _DecayedQK(NamedTuple):
    """Rotated (doubled) q', k' with their chunk-local decays folded in, each (B, H, N, c, dk')."""

    q_dec: Tensor  # q'_n e^{G_n}
    k_end: Tensor  # k'_m e^{G_T - G_m}: a key's decay to the chunk's end
    k_inc: Tensor  # k'_m e^{-G_m}: clamped, valid in safe chunks only
    doubled: bool  # dk' = 2dk ([real; imaginary] halves), or dk when q, k and a are all real


def _rotate_scale(t: Tensor, cos: Tensor | None, msin: Tensor | None, scale: Tensor) -> Tensor:
    """[t cos Φ · s, -t sin Φ · s] (the doubled key), or t · s when nothing rotates (real t)."""
    if cos is None or msin is None:
        return t * scale
    return torch.cat([t * (cos * scale), t * (msin * scale)], dim=-1)


def _chunk_local_logs(transitions: Transitions, c: int) -> _ChunkLogs:
    """log|a| in chunks of c, and the chunk-local cumulative log-magnitudes G and phases Φ."""
    log_mag, phase = transitions.as_log()  # (B, L, H, d), d = dk or 1
    lc = to_chunks(log_mag, c)  # (B, H, N, c, d)
    G = torch.cumsum(lc, dim=-2)  # (B, H, N, c, d): chunk-local, <= 0 for |a| <= 1
    Phi = None if phase is None else torch.cumsum(to_chunks(phase, c), dim=-2)  # (B, H, N, c, d)
    return _ChunkLogs(lc, G, Phi)


def _decayed_qk(
    qc: Tensor, kc: Tensor, G: Tensor, G_last: Tensor, Phi: Tensor | None, limit: float
) -> _DecayedQK:
    """q'_n e^{G_n}, k'_m e^{G_T - G_m} and k'_m e^{-G_m} for every chunk (see ``_DecayedQK``)."""
    e_q = torch.exp(G)  # (B, H, N, c, d): e^{G_n} <= 1
    e_end = torch.exp(G_last - G)  # (B, H, N, c, d): e^{G_T - G_m} <= 1
    # why the clamp: in unsafe chunks e^{-G} could overflow (and inf * 0 = NaN in the backward);
    # those chunks' scores are replaced by exact ones, so the clamped values never reach the output
    e_inc = torch.exp((-G).clamp(max=limit))  # (B, H, N, c, d)
    if qc.is_complex() or kc.is_complex():
        q2, k2, doubled = realify(qc, kc, Phi)  # (B, H, N, c, dk')
        q_dec, k_end, k_inc = (t * double_keys(e, doubled) for t, e in ((q2, e_q), (k2, e_end), (k2, e_inc)))
        return _DecayedQK(q_dec, k_end, k_inc, doubled)
    # the decays folded into the rotation at the (undoubled) key width: q' e^{G_n} =
    # [q cos Φ e^{G}, -q sin Φ e^{G}], one full-width pass per output instead of three
    cos, msin = (torch.cos(Phi), -torch.sin(Phi)) if Phi is not None else (None, None)  # (..., c, d)
    q_dec = _rotate_scale(qc, cos, msin, e_q)  # (B, H, N, c, dk'): q' e^{G_n}
    k_end = _rotate_scale(kc, cos, msin, e_end)  # (B, H, N, c, dk'): k' e^{G_T - G_m}
    k_inc = _rotate_scale(kc, cos, msin, e_inc)  # (B, H, N, c, dk'): k' e^{-G_m}
    return _DecayedQK(q_dec, k_end, k_inc, Phi is not None)


def _intra_chunk_scores(dec: _DecayedQK, qc: Tensor, kc: Tensor, logs: _ChunkLogs, limit: float) -> Tensor:
    """Causal scores Σ_d q'_nd k'_md e^{G_nd - G_md} within every chunk: (B, H, N, c, c).

    Factorised as (q' e^{G_n}) · (k' e^{-G_m}) where the chunk's decay range is within ``limit``;
    exact pairwise decays in the other chunks; zero above the diagonal.
    """
    c = qc.shape[-2]
    unsafe = (-logs.G).amax(dim=(-2, -1)) > limit  # (B, H, N)
    scores = dec.q_dec @ dec.k_inc.transpose(-1, -2)  # (B, H, N, c, c)
    if torch.compiler.is_compiling():
        # which chunks need the exact path is data: one opaque op keeps the graph whole
        scores = exact_unsafe_scores_op(scores, unsafe, qc, kc, logs.lc, logs.Phi, dec.doubled)
    elif bool(unsafe.any()):
        scores = with_exact_unsafe_scores(scores, unsafe, qc, kc, logs.lc, logs.Phi, dec.doubled)
    causal = torch.ones(c, c, dtype=torch.bool, device=qc.device).tril()  # (c, c): n >= m
    return torch.where(causal, scores, torch.zeros((), dtype=scores.dtype, device=qc.device))


def _initial_real_state(initial_state: Tensor | None, doubled: bool, like: Tensor) -> Tensor:
    """h0 as the real carried state S: [Re h0; Im h0] (B, H, 2dk, dv) when doubled, else Re h0."""
    if initial_state is None:
        B, H, _, dk2, dv = like.shape
        return like.new_zeros(B, H, dk2, dv)  # (B, H, dk', dv)
    if doubled:
        return torch.cat([initial_state.real, initial_state.imag], dim=-2)  # (B, H, 2dk, dv)
    return initial_state.real  # (B, H, dk, dv); Im h0 only decays, handled in _final_state


def _carried_states(
    dec: _DecayedQK, vc: Tensor, G_last: Tensor, Phi: Tensor | None, initial_state: Tensor | None
) -> tuple[list[Tensor], Tensor]:
    """The real state S entering every chunk (N tensors (B, H, dk', dv)) and the state after the last.

    Per chunk: S <- e^{G_T} S + Σ_m (k'_m e^{G_T - G_m})ᵀ v_m, then (doubled) h <- e^{iΦ_T} ⊙ h row-wise.
    """
    dk = dec.q_dec.shape[-1] // 2 if dec.doubled else dec.q_dec.shape[-1]
    chunk_kv = dec.k_end.transpose(-1, -2) @ vc  # (B, H, N, dk', dv): Σ_m (k' e^{G_T - G_m})ᵀ v_m
    chunk_decay = double_keys(torch.exp(G_last), dec.doubled).transpose(-1, -2)  # (B, H, N, dk'|1, 1)
    if dec.doubled:
        # the rotation over the whole chunk, e^{iΦ_T} (identity when only q or k is complex)
        last_phase = Phi[..., -1, :] if Phi is not None else torch.zeros_like(G_last[..., 0, :])  # (B,H,N,d)
        cos_t = torch.cos(last_phase)[..., None]  # (B, H, N, dk|1, 1)
        sin_t = torch.sin(last_phase)[..., None]  # (B, H, N, dk|1, 1)
    S = _initial_real_state(initial_state, dec.doubled, like=chunk_kv)  # (B, H, dk', dv)
    # unbind once: indexing [:, :, n] inside the loop would cost a full-size zero fill per
    # chunk in the backward (O(N²))
    decays, kvs = chunk_decay.unbind(2), chunk_kv.unbind(2)
    if dec.doubled:
        coss, sins = cos_t.unbind(2), sin_t.unbind(2)
    starts = []
    for n in range(len(kvs)):
        starts.append(S)
        S = decays[n] * S + kvs[n]  # (B, H, dk', dv)
        if dec.doubled:
            re, im = S[..., :dk, :], S[..., dk:, :]  # (B, H, dk, dv) each
            # h <- e^{iΦ_T} ⊙ h, row-wise rotation
            S = torch.cat([coss[n] * re - sins[n] * im, sins[n] * re + coss[n] * im], dim=-2)
    return starts, S


def _final_state(S: Tensor, G: Tensor, initial_state: Tensor | None, doubled: bool) -> Tensor:
    """The complex state after the last token, c(B H dk dv), from the real carried state S."""
    cdtype = complex_dtype_of(S.dtype)
    if doubled:
        dk = S.shape[-2] // 2
        return torch.complex(S[..., :dk, :], S[..., dk:, :])  # (B, H, dk, dv)
    final = S.to(cdtype)  # (B, H, dk, dv); why the cast: the returned state is complex by contract
    if initial_state is not None:
        # everything real: Im h0 never mixes into Re h, it only decays by Π a
        total = torch.exp(G[..., -1, :].sum(dim=2))[..., None]  # (B, H, dk|1, 1): Π a
        final = final + 1j * (total * initial_state.imag)  # (B, H, dk, dv)
    return final


@causal_nonfinite
def gate_loop_chunk(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    transitions: Transitions,
    *,
    scale: float,
    initial_state: Tensor | None,
    output_final_state: bool,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """q, k: r|c(B L H dk); v: r(B L H dv); transitions (B L H dk|1); state c(B H dk dv)."""
    L = q.shape[1]
    c = chunk_size or DEFAULT_CHUNK_SIZE
    logs = _chunk_local_logs(transitions, c)  # (B, H, N, c, d) each
    qc, kc = to_chunks(q, c), to_chunks(k, c)  # (B, H, N, c, dk)
    vc = to_chunks(v, c)  # (B, H, N, c, dv)
    limit = safe_range(v.dtype)
    G_last = logs.G[..., -1:, :]  # (B, H, N, 1, d): log-decay over the whole chunk
    dec = _decayed_qk(qc, kc, logs.G, G_last, logs.Phi, limit)  # (B, H, N, c, dk') each
    y = _intra_chunk_scores(dec, qc, kc, logs, limit) @ vc  # (B, H, N, c, dv)
    # inter-chunk: carry the state S = [Re h; Im h] (doubled) or Re h (real case) across chunks
    starts, S = _carried_states(dec, vc, G_last, logs.Phi, initial_state)
    if initial_state is not None or len(starts) > 1:  # else the only carried-in state is zero
        y = y + dec.q_dec @ torch.stack(starts, dim=2)  # (B, H, N, c, dv)
    y = from_chunks(y, L) * scale  # (B, L, H, dv)
    final = _final_state(S, logs.G, initial_state, dec.doubled) if output_final_state else None
    return y, final
