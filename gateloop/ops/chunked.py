"""Chunked mode (the fast default): real gated linear attention with doubled keys.

With log a = ℓ + iθ and chunk-local cumulative sums G = cumsum ℓ, Φ = cumsum θ, the complex
GateLoop output y_n = Re(q_n h_n) splits into an intra-chunk part and the contribution of the
state h carried in from the previous chunk (``../shared/NUMERICS.md``):

    A_n = q_n e^{iΦ_n},  B_m = k_m e^{-iΦ_m},   q'_n = [Re A_n, -Im A_n],  k'_m = [Re B_m, Im B_m]
    y_n = Σ_{m<=n in chunk} (q'_n ⊙ e^{G_n}) · (k'_m ⊙ e^{-G_m}) v_m  +  (q'_n ⊙ e^{G_n}) S
    S = [Re h; Im h]  (2dk x dv, real)
    at the chunk end:  h <- e^{iΦ_T} ⊙ (e^{G_T} S + Σ_m (k'_m e^{G_T - G_m})ᵀ v_m)

so everything is a real matmul with key dimension 2·dk (dk when q, k and a are all real). Every
exponent is <= 0 except e^{-G_m} in the diagonal block, which is used only in chunks whose
log-decay range is below ``safe_range``; other chunks get exact pairwise decays
exp(G_n - G_m), masked before the exponential and accumulated in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gateloop.ops._chunking import DEFAULT_CHUNK_SIZE, from_chunks, safe_range, to_chunks
from gateloop.ops._inputs import Transitions, complex_dtype_of


def _realify(q: Tensor, k: Tensor, phase_cum: Tensor | None) -> tuple[Tensor, Tensor, bool]:
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


def _double(t: Tensor, doubled: bool) -> Tensor:
    """Repeat a per-key-dim tensor over the two halves of the doubled key (broadcast if d == 1)."""
    if not doubled or t.shape[-1] == 1:
        return t
    return torch.cat([t, t], dim=-1)


def _rotate_scale(t: Tensor, cos: Tensor | None, msin: Tensor | None, scale: Tensor) -> Tensor:
    """[t cos Φ · s, -t sin Φ · s] (the doubled key), or t · s when nothing rotates (real t)."""
    if cos is None or msin is None:
        return t * scale
    return torch.cat([t * (cos * scale), t * (msin * scale)], dim=-1)


def _pairwise_scores(q2: Tensor, k2: Tensor, log_mag: Tensor, doubled: bool) -> Tensor:
    """Exact diagonal-block scores Σ_d q'_nd k'_md e^{G_nd - G_md} for a batch of chunks.

    q2, k2: (n, c, dk'); log_mag: (n, c, d). Returns (n, c, c), zero above the diagonal.
    """
    c = q2.shape[-2]
    # why float64: a chunk lands here because its cumulative log-decay is large, exactly where a
    # float32 difference G_n - G_m would cancel its leading digits
    G = torch.cumsum(log_mag.to(torch.float64), dim=-2)  # (n, c, d)
    dG = G[:, :, None, :] - G[:, None, :, :]  # (n, c_n, c_m, d)
    causal = torch.ones(c, c, dtype=torch.bool, device=q2.device).tril()[..., None]  # (c, c, 1)
    dG = torch.where(causal, dG, torch.full_like(dG, float("-inf")))  # mask before exp
    decay = torch.exp(dG).to(q2.dtype)  # (n, c, c, d)
    if decay.shape[-1] == 1:
        return (q2 @ k2.transpose(-1, -2)) * decay[..., 0]  # (n, c, c)
    decay = _double(decay, doubled)  # (n, c, c, dk')
    return torch.einsum("nid,njd,nijd->nij", q2, k2, decay)  # (n, c, c)


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
    B, L, H, dk = q.shape
    dv = v.shape[-1]
    c = chunk_size or DEFAULT_CHUNK_SIZE
    real = v.dtype
    log_mag, phase = transitions.as_log()  # (B, L, H, d), d = dk or 1
    lc = to_chunks(log_mag, c)  # (B, H, N, c, d)
    N = lc.shape[2]
    G = torch.cumsum(lc, dim=-2)  # (B, H, N, c, d): chunk-local, <= 0 for |a| <= 1
    Phi = None if phase is None else torch.cumsum(to_chunks(phase, c), dim=-2)  # (B, H, N, c, d)
    qc, kc = to_chunks(q, c), to_chunks(k, c)  # (B, H, N, c, dk)
    vc = to_chunks(v, c)  # (B, H, N, c, dv)

    limit = safe_range(real)
    G_last = G[..., -1:, :]  # (B, H, N, 1, d)
    e_q = torch.exp(G)  # (B, H, N, c, d): e^{G_n} <= 1
    e_end = torch.exp(G_last - G)  # (B, H, N, c, d): e^{G_T - G_m} <= 1
    # why the clamp: in unsafe chunks e^{-G} could overflow (and inf * 0 = NaN in the backward);
    # those chunks' scores are replaced below, so the clamped values never reach the output
    e_inc = torch.exp((-G).clamp(max=limit))  # (B, H, N, c, d)
    if q.is_complex() or k.is_complex():
        q2, k2, doubled = _realify(qc, kc, Phi)  # (B, H, N, c, dk')
        q_dec, k_end, k_inc = (t * _double(e, doubled) for t, e in ((q2, e_q), (k2, e_end), (k2, e_inc)))
    else:
        # the decays folded into the rotation at the (undoubled) key width: q' e^{G_n} =
        # [q cos Φ e^{G}, -q sin Φ e^{G}], one full-width pass per output instead of three
        doubled = Phi is not None
        cos, msin = (torch.cos(Phi), -torch.sin(Phi)) if Phi is not None else (None, None)
        q_dec = _rotate_scale(qc, cos, msin, e_q)  # (B, H, N, c, dk'): q' e^{G_n}
        k_end = _rotate_scale(kc, cos, msin, e_end)  # (B, H, N, c, dk'): k' e^{G_T - G_m}
        k_inc = _rotate_scale(kc, cos, msin, e_inc)  # (B, H, N, c, dk'): k' e^{-G_m}

    # intra-chunk scores; factorised where the chunk's decay range is safe
    unsafe = (-G).amax(dim=(-2, -1)) > limit  # (B, H, N)
    scores = q_dec @ k_inc.transpose(-1, -2)  # (B, H, N, c, c)
    if bool(unsafe.any()):
        idx = unsafe.flatten().nonzero().squeeze(1)  # (n_unsafe,)

        def rows(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.flatten(0, 2).index_select(0, idx)

        q2_u, k2_u, _ = _realify(rows(qc), rows(kc), rows(Phi))  # type: ignore[arg-type]
        exact = _pairwise_scores(q2_u, k2_u, rows(lc), doubled)  # type: ignore[arg-type]  # (n_unsafe, c, c)
        scores = scores.flatten(0, 2).index_copy(0, idx, exact).view(B, H, N, c, c)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    scores = torch.where(causal, scores, torch.zeros((), dtype=scores.dtype, device=q.device))
    y = scores @ vc  # (B, H, N, c, dv)

    # inter-chunk: carry the state S = [Re h; Im h] (doubled) or Re h (real case) across chunks
    dk2 = q_dec.shape[-1]
    chunk_kv = k_end.transpose(-1, -2) @ vc  # (B, H, N, dk', dv): Σ_m (k' e^{G_T - G_m})ᵀ v_m
    chunk_decay = _double(torch.exp(G_last), doubled).transpose(-1, -2)  # (B, H, N, dk'|1, 1)
    if doubled:
        last_phase = Phi[..., -1, :] if Phi is not None else torch.zeros_like(G[..., -1, :])
        cos_t = torch.cos(last_phase)[..., None]  # (B, H, N, dk|1, 1)
        sin_t = torch.sin(last_phase)[..., None]
    if initial_state is None:
        S = q_dec.new_zeros(B, H, dk2, dv)
    elif doubled:
        S = torch.cat([initial_state.real, initial_state.imag], dim=-2)  # (B, H, 2dk, dv)
    else:
        S = initial_state.real  # (B, H, dk, dv); Im h0 only decays, handled at the end
    # unbind once: indexing [:, :, n] inside the loop would cost a full-size zero fill per
    # chunk in the backward (O(N²))
    decays, kvs = chunk_decay.unbind(2), chunk_kv.unbind(2)
    if doubled:
        coss, sins = cos_t.unbind(2), sin_t.unbind(2)
    starts = []
    for n in range(N):
        starts.append(S)
        S = decays[n] * S + kvs[n]  # (B, H, dk', dv)
        if doubled:
            re, im = S[..., :dk, :], S[..., dk:, :]
            # h <- e^{iΦ_T} ⊙ h, row-wise rotation
            S = torch.cat([coss[n] * re - sins[n] * im, sins[n] * re + coss[n] * im], dim=-2)
    if initial_state is not None or N > 1:
        y = y + q_dec @ torch.stack(starts, dim=2)  # (B, H, N, c, dv)
    y = from_chunks(y, L) * scale  # (B, L, H, dv)

    final = None
    if output_final_state:
        cdtype = complex_dtype_of(real)
        if doubled:
            final = torch.complex(S[..., :dk, :], S[..., dk:, :])  # (B, H, dk, dv)
        else:
            final = S.to(cdtype)
            if initial_state is not None:
                total = torch.exp(G[..., -1, :].sum(dim=2))[..., None]  # (B, H, dk|1, 1): Π a
                final = final + 1j * (total * initial_state.imag)
    return y, final
