"""Triton kernels of the exact complex SISO scan (dk = dv = 1 per head): ours, not a reduction.

    h_n = a_n h_{n-1} + k_n v_n,    y_n = scale · Re(q_n h_n),    a_n = e^{log a_n} (or a_n given)

Tensors are ``[T, H]`` rows (the library's ``[B, L, H, 1]`` flattened over B·L, or the packed
``[1, T, H, 1]``), complex ones as interleaved (re, im) pairs (``torch.view_as_real``). One
program walks one sequence's chunks of ``BT`` steps for ``BH`` adjacent channels (loads
coalesced along H); inside a chunk the recurrence is a ``tl.associative_scan`` with the complex
combine of paper eq. 13, and the chunk's last state is the carry into the next chunk.

Every step multiplies by a_n itself: no cumulative phase Φ, no cumulative log-decay, no division
and no floor, so log a = -inf (a = 0) is an exact reset with an exact zero gradient and a gate of
1e-12 keeps its full relative precision (the fla reduction's phase gradient is a reverse cumsum
of O(1) terms that cancel: ``docs/numerics.md``, 'SISO on GPU: our scan').

Backward (PyTorch's complex-gradient convention, as the compiled CPU kernel ``csrc/siso_scan.cpp``):
    c_n  = scale · dy_n · conj(q_n)                    (dL/dh_n from y_n)
    g_n  = c_n + conj(a_{n+1}) g_{n+1},  g_{end} = dL/dh_final     (a reverse scan)
    dq_n = scale dy_n conj(h_n),  dk_n = g_n v_n,  dv_n = Re(g_n conj(k_n))
    d log a_n = g_n conj(a_n h_{n-1})   (or da_n = g_n conj(h_{n-1})),  dh_0 = conj(a_0) g_0
with h_{n-1} recomputed per chunk from the state that entered it (the forward stores one state a
chunk, ``[chunks, H]``: nothing of size T beyond y). Real tensors take the real parts.

This module imports Triton: load it only through ``siso_scan._kernels()``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _combine(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):  # type: ignore[no-untyped-def]
    """(a1, b1) then (a2, b2): h ↦ a2 (a1 h + b1) + b2 = (a2 a1) h + (a2 b1 + b2), complex."""
    ar = ar2 * ar1 - ai2 * ai1
    ai = ar2 * ai1 + ai2 * ar1
    br = ar2 * br1 - ai2 * bi1 + br2
    bi = ar2 * bi1 + ai2 * br1 + bi2
    return ar, ai, br, bi


@triton.jit
def _load_pair(ptr, off, mask, IS_COMPLEX: tl.constexpr):  # type: ignore[no-untyped-def]
    """(re, im) float32 at element offsets ``off``; 0 on masked lanes (im = 0 for real tensors)."""
    if IS_COMPLEX:
        re = tl.load(ptr + 2 * off, mask=mask, other=0.0).to(tl.float32)
        im = tl.load(ptr + 2 * off + 1, mask=mask, other=0.0).to(tl.float32)
    else:
        re = tl.load(ptr + off, mask=mask, other=0.0).to(tl.float32)
        im = tl.zeros_like(re)
    return re, im


@triton.jit
def _load_transition(ptr, off, mask, LOG: tl.constexpr, A_COMPLEX: tl.constexpr):  # type: ignore[no-untyped-def]
    """a_n as (re, im) float32; masked lanes are the identity a = 1 (no decay, no rotation)."""
    re, im = _load_pair(ptr, off, mask, A_COMPLEX)
    if LOG:
        # e^{ℓ}(cos θ, sin θ); ℓ = -inf gives exactly 0, a reset; masked lanes: e^0 = 1
        magnitude = tl.exp(re)
        ar = magnitude * tl.cos(im)
        ai = magnitude * tl.sin(im)
    else:
        ar = tl.where(mask, re, 1.0)
        ai = im
    return ar, ai


@triton.jit
def _row(x, index, BT: tl.constexpr):  # type: ignore[no-untyped-def]
    """Row ``index`` of a [BT, BH] tile as a [BH] vector (a masked sum: Triton has no gather)."""
    pick = (tl.arange(0, BT) == index)[:, None]
    return tl.sum(tl.where(pick, x, 0.0), axis=0)


@triton.jit
def _bounds(cu_seqlens, chunk_offsets, i_n, T, BT: tl.constexpr, IS_VARLEN: tl.constexpr):  # type: ignore[no-untyped-def]
    """Sequence i_n's first row, one past its last row, and its first chunk's index."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        c0 = tl.load(chunk_offsets + i_n).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
        c0 = i_n.to(tl.int64) * tl.cdiv(T, BT)
    return bos, eos, c0


@triton.jit
def siso_scan_fwd_kernel(  # type: ignore[no-untyped-def]
    q,
    k,
    v,
    la,
    h0,
    y,
    ht,
    cs,
    cu_seqlens,
    chunk_offsets,
    scale,
    T,
    H,
    LOG: tl.constexpr,
    A_COMPLEX: tl.constexpr,
    Q_COMPLEX: tl.constexpr,
    K_COMPLEX: tl.constexpr,
    HAS_H0: tl.constexpr,
    STORE_CS: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    BT: tl.constexpr,
    BH: tl.constexpr,
):
    """y [T, H] float32, ht [N, H, 2] the final states, cs [chunks, H, 2] the state entering
    every chunk (when STORE_CS); grid (cdiv(H, BH), N)."""
    i_h = tl.program_id(0)
    i_n = tl.program_id(1)
    bos, eos, c0 = _bounds(cu_seqlens, chunk_offsets, i_n, T, BT, IS_VARLEN)
    o_h = i_h * BH + tl.arange(0, BH)  # (BH,) channels
    m_h = o_h < H
    state = (i_n * H + o_h) * 2  # (BH,) offsets of (re, im) in [N, H, 2]
    if HAS_H0:
        hr = tl.load(h0 + state, mask=m_h, other=0.0).to(tl.float32)
        hi = tl.load(h0 + state + 1, mask=m_h, other=0.0).to(tl.float32)
    else:
        hr = tl.zeros([BH], dtype=tl.float32)
        hi = tl.zeros([BH], dtype=tl.float32)
    for i_t in range(0, tl.cdiv(eos - bos, BT)):
        if STORE_CS:
            chunk = ((c0 + i_t) * H + o_h) * 2  # (BH,)
            tl.store(cs + chunk, hr, mask=m_h)
            tl.store(cs + chunk + 1, hi, mask=m_h)
        o_t = bos + i_t * BT + tl.arange(0, BT)  # (BT,) rows
        mask = (o_t < eos)[:, None] & m_h[None, :]  # (BT, BH)
        off = o_t[:, None] * H + o_h[None, :]  # (BT, BH)
        ar, ai = _load_transition(la, off, mask, LOG, A_COMPLEX)
        kr, ki = _load_pair(k, off, mask, K_COMPLEX)
        vv = tl.load(v + off, mask=mask, other=0.0).to(tl.float32)
        # (A_t, B_t): h_t = A_t h_carry + B_t, A_t = Π a within the chunk (products, never quotients);
        # masked rows are (1, 0), so the last row is the state after the chunk's last real step
        pr, pi, br, bi = tl.associative_scan((ar, ai, kr * vv, ki * vv), 0, _combine)
        sr = pr * hr[None, :] - pi * hi[None, :] + br  # (BT, BH) Re h_t
        si = pr * hi[None, :] + pi * hr[None, :] + bi  # (BT, BH) Im h_t
        qr, qi = _load_pair(q, off, mask, Q_COMPLEX)
        tl.store(y + off, scale * (qr * sr - qi * si), mask=mask)
        hr = _row(sr, BT - 1, BT)
        hi = _row(si, BT - 1, BT)
    tl.store(ht + state, hr, mask=m_h)
    tl.store(ht + state + 1, hi, mask=m_h)


@triton.jit
def _store_pair(ptr, off, re, im, mask, IS_COMPLEX: tl.constexpr):  # type: ignore[no-untyped-def]
    """A gradient at ``off``: (re, im) interleaved for complex tensors, re alone for real ones."""
    if IS_COMPLEX:
        tl.store(ptr + 2 * off, re, mask=mask)
        tl.store(ptr + 2 * off + 1, im, mask=mask)
    else:
        tl.store(ptr + off, re, mask=mask)


@triton.jit
def siso_scan_bwd_kernel(  # type: ignore[no-untyped-def]
    q,
    k,
    v,
    la,
    dy,
    cs,
    dht,
    dq,
    dk,
    dv,
    dla,
    dh0,
    cu_seqlens,
    chunk_offsets,
    scale,
    T,
    H,
    LOG: tl.constexpr,
    A_COMPLEX: tl.constexpr,
    Q_COMPLEX: tl.constexpr,
    K_COMPLEX: tl.constexpr,
    HAS_DHT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    BT: tl.constexpr,
    BH: tl.constexpr,
):
    """Every gradient of ``siso_scan_fwd_kernel``; walks the chunks last to first. Grid as forward."""
    i_h = tl.program_id(0)
    i_n = tl.program_id(1)
    bos, eos, c0 = _bounds(cu_seqlens, chunk_offsets, i_n, T, BT, IS_VARLEN)
    o_h = i_h * BH + tl.arange(0, BH)
    m_h = o_h < H
    state = (i_n * H + o_h) * 2
    if HAS_DHT:  # g after the last step: the final state's cotangent
        gr = tl.load(dht + state, mask=m_h, other=0.0).to(tl.float32)
        gi = tl.load(dht + state + 1, mask=m_h, other=0.0).to(tl.float32)
    else:
        gr = tl.zeros([BH], dtype=tl.float32)
        gi = tl.zeros([BH], dtype=tl.float32)
    n_chunks = tl.cdiv(eos - bos, BT)
    for j in range(0, n_chunks):
        i_t = n_chunks - 1 - j
        t0 = bos + i_t * BT
        o_t = t0 + tl.arange(0, BT)  # (BT,)
        m_t = o_t < eos
        mask = m_t[:, None] & m_h[None, :]  # (BT, BH)
        off = o_t[:, None] * H + o_h[None, :]
        # adjoint: reverse scan of (conj(a_{n+1}), c_n); a beyond the sequence's end is 1, so the
        # last real row gets c + g_end, and rows past the end are the identity (1, 0)
        nxt = (o_t + 1 < eos)[:, None] & m_h[None, :]
        anr, ani = _load_transition(la, off + H, nxt, LOG, A_COMPLEX)
        qr, qi = _load_pair(q, off, mask, Q_COMPLEX)
        d = scale * tl.load(dy + off, mask=mask, other=0.0).to(tl.float32)  # (BT, BH)
        pr, pi, br, bi = tl.associative_scan((anr, -ani, d * qr, -d * qi), 0, _combine, reverse=True)
        g_r = pr * gr[None, :] - pi * gi[None, :] + br  # (BT, BH) Re g_n
        g_i = pr * gi[None, :] + pi * gr[None, :] + bi  # (BT, BH) Im g_n
        # h_{n-1}: forward scan of (a_{n-1}, k_{n-1} v_{n-1}) from the state entering the chunk
        # (the chunk's first row gets (1, 0): h_{t0-1} is that state itself)
        prv = ((o_t > t0) & m_t)[:, None] & m_h[None, :]
        apr, api = _load_transition(la, off - H, prv, LOG, A_COMPLEX)
        kpr, kpi = _load_pair(k, off - H, prv, K_COMPLEX)
        vp = tl.load(v + off - H, mask=prv, other=0.0).to(tl.float32)
        sr_, si_, xr_, xi_ = tl.associative_scan((apr, api, kpr * vp, kpi * vp), 0, _combine)
        chunk = ((c0 + i_t) * H + o_h) * 2
        s0r = tl.load(cs + chunk, mask=m_h, other=0.0)[None, :]  # (1, BH)
        s0i = tl.load(cs + chunk + 1, mask=m_h, other=0.0)[None, :]
        hpr = sr_ * s0r - si_ * s0i + xr_  # (BT, BH) Re h_{n-1}
        hpi = sr_ * s0i + si_ * s0r + xi_
        ar, ai = _load_transition(la, off, mask, LOG, A_COMPLEX)
        ahr = ar * hpr - ai * hpi  # (BT, BH) a_n h_{n-1}, formed as a product: exact near a = 0
        ahi = ar * hpi + ai * hpr
        kr, ki = _load_pair(k, off, mask, K_COMPLEX)
        vv = tl.load(v + off, mask=mask, other=0.0).to(tl.float32)
        _store_pair(dq, off, d * (ahr + kr * vv), -d * (ahi + ki * vv), mask, Q_COMPLEX)  # d·conj(h_n)
        _store_pair(dk, off, g_r * vv, g_i * vv, mask, K_COMPLEX)
        tl.store(dv + off, g_r * kr + g_i * ki, mask=mask)
        if LOG:  # g conj(a h_{n-1})
            _store_pair(dla, off, g_r * ahr + g_i * ahi, g_i * ahr - g_r * ahi, mask, A_COMPLEX)
        else:  # g conj(h_{n-1})
            _store_pair(dla, off, g_r * hpr + g_i * hpi, g_i * hpr - g_r * hpi, mask, A_COMPLEX)
        gr = _row(g_r, 0, BT)
        gi = _row(g_i, 0, BT)
    # dh_0 = conj(a_0) g_0
    first = bos * H + o_h
    a0r, a0i = _load_transition(la, first, m_h, LOG, A_COMPLEX)
    tl.store(dh0 + state, a0r * gr + a0i * gi, mask=m_h)
    tl.store(dh0 + state + 1, a0r * gi - a0i * gr, mask=m_h)
