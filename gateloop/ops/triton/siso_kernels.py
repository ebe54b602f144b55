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
def _chunk_of(cu_seqlens, chunk_offsets, chunk_seq, j, T, BT: tl.constexpr, IS_VARLEN: tl.constexpr):  # type: ignore[no-untyped-def]
    """Chunk slot j's sequence, first row and one past the sequence's last row. Varlen grids have
    a few more slots than chunks (no host sync to count them): those get an empty range."""
    if IS_VARLEN:
        seq = tl.load(chunk_seq + j).to(tl.int64)  # -1 on a spare slot
        safe = tl.maximum(seq, 0)
        bos = tl.load(cu_seqlens + safe).to(tl.int64)
        c0 = tl.load(chunk_offsets + safe).to(tl.int64)
        t0 = bos + (j - c0) * BT
        eos = tl.where(seq >= 0, tl.load(cu_seqlens + safe + 1).to(tl.int64), t0)
    else:
        n_chunks = tl.cdiv(T, BT)
        seq = j.to(tl.int64) // n_chunks
        t0 = seq * T + (j % n_chunks) * BT
        eos = (seq + 1) * T
    return t0, eos


@triton.jit
def _tile(t0, eos, o_h, m_h, H, BT: tl.constexpr):  # type: ignore[no-untyped-def]
    """Rows t0 .. t0 + BT of the channels o_h: element offsets, the in-range mask, the row indices."""
    o_t = t0 + tl.arange(0, BT)  # (BT,)
    mask = (o_t < eos)[:, None] & m_h[None, :]  # (BT, BH)
    off = o_t[:, None] * H + o_h[None, :]  # (BT, BH)
    return off, mask, o_t


@triton.jit
def _scan_tile(k, v, la, off, mask, LOG: tl.constexpr, A_COMPLEX: tl.constexpr, K_COMPLEX: tl.constexpr):  # type: ignore[no-untyped-def]
    """(A_t, B_t) over a tile: h_t = A_t h_in + B_t, A_t = Π a within the tile (products, never
    quotients); masked rows are (1, 0), so the last row is the tile's whole map."""
    ar, ai = _load_transition(la, off, mask, LOG, A_COMPLEX)
    kr, ki = _load_pair(k, off, mask, K_COMPLEX)
    vv = tl.load(v + off, mask=mask, other=0.0).to(tl.float32)
    return tl.associative_scan((ar, ai, kr * vv, ki * vv), 0, _combine)


@triton.jit
def _output_tile(  # type: ignore[no-untyped-def]
    q, k, v, la, y, off, mask, hr, hi, scale,
    LOG: tl.constexpr, A_COMPLEX: tl.constexpr, Q_COMPLEX: tl.constexpr, K_COMPLEX: tl.constexpr,
    BT: tl.constexpr,
):  # fmt: skip
    """y over a tile from the state (hr, hi) entering it; returns the state after it."""
    pr, pi, br, bi = _scan_tile(k, v, la, off, mask, LOG, A_COMPLEX, K_COMPLEX)
    sr = pr * hr[None, :] - pi * hi[None, :] + br  # (BT, BH) Re h_t
    si = pr * hi[None, :] + pi * hr[None, :] + bi  # (BT, BH) Im h_t
    qr, qi = _load_pair(q, off, mask, Q_COMPLEX)
    tl.store(y + off, scale * (qr * sr - qi * si), mask=mask)
    return _row(sr, BT - 1, BT), _row(si, BT - 1, BT)


@triton.jit
def _adjoint_tile(  # type: ignore[no-untyped-def]
    q, la, dy, off, mask, o_t, eos, m_h, H, scale,
    LOG: tl.constexpr, A_COMPLEX: tl.constexpr, Q_COMPLEX: tl.constexpr,
):  # fmt: skip
    """The reverse scan of (conj(a_{n+1}), c_n), c_n = scale dy_n conj(q_n): g_n = A_n g_in + B_n
    with g_in the adjoint of the next tile's first row. a beyond the sequence's end is 1 (the last
    row gets c + g_end); rows past the end are the identity. Returns A, B and scale·dy."""
    nxt = (o_t + 1 < eos)[:, None] & m_h[None, :]
    anr, ani = _load_transition(la, off + H, nxt, LOG, A_COMPLEX)  # a_{n+1}
    qr, qi = _load_pair(q, off, mask, Q_COMPLEX)
    d = scale * tl.load(dy + off, mask=mask, other=0.0).to(tl.float32)  # (BT, BH)
    pr, pi, br, bi = tl.associative_scan((anr, -ani, d * qr, -d * qi), 0, _combine, reverse=True)
    return pr, pi, br, bi, d


@triton.jit
def _grad_tile(  # type: ignore[no-untyped-def]
    q, k, v, la, dy, dq, dk, dv, dla, off, mask, o_t, t0, eos, m_h, H, scale, gr, gi, s0r, s0i,
    LOG: tl.constexpr, A_COMPLEX: tl.constexpr, Q_COMPLEX: tl.constexpr, K_COMPLEX: tl.constexpr,
    BT: tl.constexpr,
):  # fmt: skip
    """Every gradient over a tile, from the adjoint (gr, gi) after it and the state (s0r, s0i)
    before it; returns the adjoint of its first row."""
    pr, pi, br, bi, d = _adjoint_tile(
        q, la, dy, off, mask, o_t, eos, m_h, H, scale, LOG, A_COMPLEX, Q_COMPLEX
    )
    g_r = pr * gr[None, :] - pi * gi[None, :] + br  # (BT, BH) Re g_n
    g_i = pr * gi[None, :] + pi * gr[None, :] + bi  # (BT, BH) Im g_n
    # h_{n-1}: forward scan of (a_{n-1}, k_{n-1} v_{n-1}); the tile's first row gets (1, 0), so
    # h_{t0-1} is the state entering the tile itself
    prv = ((o_t > t0) & (o_t < eos))[:, None] & m_h[None, :]
    sr_, si_, xr_, xi_ = _scan_tile(k, v, la, off - H, prv, LOG, A_COMPLEX, K_COMPLEX)
    hpr = sr_ * s0r[None, :] - si_ * s0i[None, :] + xr_  # (BT, BH) Re h_{n-1}
    hpi = sr_ * s0i[None, :] + si_ * s0r[None, :] + xi_
    ar, ai = _load_transition(la, off, mask, LOG, A_COMPLEX)
    ahr = ar * hpr - ai * hpi  # (BT, BH) a_n h_{n-1}, a product: exact near a = 0
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
    return _row(g_r, 0, BT), _row(g_i, 0, BT)


@triton.jit
def _store_pair(ptr, off, re, im, mask, IS_COMPLEX: tl.constexpr):  # type: ignore[no-untyped-def]
    """A gradient at ``off``: (re, im) interleaved for complex tensors, re alone for real ones."""
    if IS_COMPLEX:
        tl.store(ptr + 2 * off, re, mask=mask)
        tl.store(ptr + 2 * off + 1, im, mask=mask)
    else:
        tl.store(ptr + off, re, mask=mask)


@triton.jit
def _load_state(ptr, index, o_h, m_h, H):  # type: ignore[no-untyped-def]
    """Row ``index`` of a [rows, H, 2] complex state tensor as (re, im) [BH] float32."""
    at = (index * H + o_h) * 2
    return (
        tl.load(ptr + at, mask=m_h, other=0.0).to(tl.float32),
        tl.load(ptr + at + 1, mask=m_h, other=0.0).to(tl.float32),
    )


@triton.jit
def _store_state(ptr, index, o_h, m_h, H, re, im):  # type: ignore[no-untyped-def]
    at = (index * H + o_h) * 2
    tl.store(ptr + at, re, mask=m_h)
    tl.store(ptr + at + 1, im, mask=m_h)


# --- one program per sequence: the tiles in order, the carry in registers ------------------------


@triton.jit
def siso_scan_fwd_kernel(  # type: ignore[no-untyped-def]
    q, k, v, la, h0, y, ht, cs, cu_seqlens, chunk_offsets, scale, T, H,
    LOG: tl.constexpr, A_COMPLEX: tl.constexpr, Q_COMPLEX: tl.constexpr, K_COMPLEX: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_CS: tl.constexpr, IS_VARLEN: tl.constexpr,
    BT: tl.constexpr, BH: tl.constexpr,
):  # fmt: skip
    """y [T, H] float32, ht [N, H, 2] the final states, cs [chunks, H, 2] the state entering
    every chunk (when STORE_CS); grid (cdiv(H, BH), N)."""
    i_h, i_n = tl.program_id(0), tl.program_id(1)
    bos, eos, c0 = _bounds(cu_seqlens, chunk_offsets, i_n, T, BT, IS_VARLEN)
    o_h = i_h * BH + tl.arange(0, BH)  # (BH,) channels
    m_h = o_h < H
    if HAS_H0:
        hr, hi = _load_state(h0, i_n, o_h, m_h, H)
    else:
        hr = tl.zeros([BH], dtype=tl.float32)
        hi = tl.zeros([BH], dtype=tl.float32)
    for i_t in range(0, tl.cdiv(eos - bos, BT)):
        if STORE_CS:
            _store_state(cs, c0 + i_t, o_h, m_h, H, hr, hi)
        off, mask, _ = _tile(bos + i_t * BT, eos, o_h, m_h, H, BT)
        hr, hi = _output_tile(
            q, k, v, la, y, off, mask, hr, hi, scale, LOG, A_COMPLEX, Q_COMPLEX, K_COMPLEX, BT
        )
    _store_state(ht, i_n, o_h, m_h, H, hr, hi)


@triton.jit
def siso_scan_bwd_kernel(  # type: ignore[no-untyped-def]
    q, k, v, la, dy, cs, dht, dq, dk, dv, dla, dh0, cu_seqlens, chunk_offsets, scale, T, H,
    LOG: tl.constexpr, A_COMPLEX: tl.constexpr, Q_COMPLEX: tl.constexpr, K_COMPLEX: tl.constexpr,
    HAS_DHT: tl.constexpr, IS_VARLEN: tl.constexpr, BT: tl.constexpr, BH: tl.constexpr,
):  # fmt: skip
    """Every gradient of ``siso_scan_fwd_kernel``; walks the chunks last to first. Grid as forward."""
    i_h, i_n = tl.program_id(0), tl.program_id(1)
    bos, eos, c0 = _bounds(cu_seqlens, chunk_offsets, i_n, T, BT, IS_VARLEN)
    o_h = i_h * BH + tl.arange(0, BH)
    m_h = o_h < H
    if HAS_DHT:  # the adjoint after the last step: the final state's cotangent
        gr, gi = _load_state(dht, i_n, o_h, m_h, H)
    else:
        gr = tl.zeros([BH], dtype=tl.float32)
        gi = tl.zeros([BH], dtype=tl.float32)
    n_chunks = tl.cdiv(eos - bos, BT)
    for j in range(0, n_chunks):
        i_t = n_chunks - 1 - j
        t0 = bos + i_t * BT
        off, mask, o_t = _tile(t0, eos, o_h, m_h, H, BT)
        s0r, s0i = _load_state(cs, c0 + i_t, o_h, m_h, H)
        gr, gi = _grad_tile(
            q, k, v, la, dy, dq, dk, dv, dla, off, mask, o_t, t0, eos, m_h, H, scale, gr, gi, s0r, s0i,
            LOG, A_COMPLEX, Q_COMPLEX, K_COMPLEX, BT,
        )  # fmt: skip
    _store_initial_grad(la, dh0, bos, i_n, o_h, m_h, H, gr, gi, LOG, A_COMPLEX)


@triton.jit
def _store_initial_grad(la, dh0, bos, i_n, o_h, m_h, H, gr, gi, LOG: tl.constexpr, A_COMPLEX: tl.constexpr):  # type: ignore[no-untyped-def]
    """dh_0 = conj(a_0) g_0."""
    a0r, a0i = _load_transition(la, bos * H + o_h, m_h, LOG, A_COMPLEX)
    _store_state(dh0, i_n, o_h, m_h, H, a0r * gr + a0i * gi, a0r * gi - a0i * gr)


# --- split over chunks (small B·H): summaries in parallel, a short carry pass, outputs in parallel


@triton.jit
def siso_chunk_summary_kernel(  # type: ignore[no-untyped-def]
    k, v, la, summary, cu_seqlens, chunk_offsets, chunk_seq, T, H,
    LOG: tl.constexpr, A_COMPLEX: tl.constexpr, K_COMPLEX: tl.constexpr, IS_VARLEN: tl.constexpr,
    BT: tl.constexpr, BH: tl.constexpr,
):  # fmt: skip
    """Each chunk's map h ↦ P h + S (P = Π a, S its state from zero): summary [slots, 2, H, 2]."""
    i_h, j = tl.program_id(0), tl.program_id(1)
    t0, eos = _chunk_of(cu_seqlens, chunk_offsets, chunk_seq, j, T, BT, IS_VARLEN)
    o_h = i_h * BH + tl.arange(0, BH)
    m_h = o_h < H
    off, mask, _ = _tile(t0, eos, o_h, m_h, H, BT)
    pr, pi, br, bi = _scan_tile(k, v, la, off, mask, LOG, A_COMPLEX, K_COMPLEX)
    _store_state(summary, 2 * j, o_h, m_h, H, _row(pr, BT - 1, BT), _row(pi, BT - 1, BT))
    _store_state(summary, 2 * j + 1, o_h, m_h, H, _row(br, BT - 1, BT), _row(bi, BT - 1, BT))


@triton.jit
def siso_chunk_carry_kernel(  # type: ignore[no-untyped-def]
    summary, h0, ht, cs, cu_seqlens, chunk_offsets, T, H,
    HAS_H0: tl.constexpr, IS_VARLEN: tl.constexpr, BT: tl.constexpr, BH: tl.constexpr,
):  # fmt: skip
    """The state entering every chunk (cs) and the final states, chunk map by chunk map; grid
    (cdiv(H, BH), N). Reads 2 complex numbers a chunk: ~1/32 of the data."""
    i_h, i_n = tl.program_id(0), tl.program_id(1)
    bos, eos, c0 = _bounds(cu_seqlens, chunk_offsets, i_n, T, BT, IS_VARLEN)
    o_h = i_h * BH + tl.arange(0, BH)
    m_h = o_h < H
    if HAS_H0:
        hr, hi = _load_state(h0, i_n, o_h, m_h, H)
    else:
        hr = tl.zeros([BH], dtype=tl.float32)
        hi = tl.zeros([BH], dtype=tl.float32)
    for i_t in range(0, tl.cdiv(eos - bos, BT)):
        c = c0 + i_t
        _store_state(cs, c, o_h, m_h, H, hr, hi)
        pr, pi = _load_state(summary, 2 * c, o_h, m_h, H)
        sr, si = _load_state(summary, 2 * c + 1, o_h, m_h, H)
        hr, hi = pr * hr - pi * hi + sr, pr * hi + pi * hr + si
    _store_state(ht, i_n, o_h, m_h, H, hr, hi)


@triton.jit
def siso_chunk_output_kernel(  # type: ignore[no-untyped-def]
    q, k, v, la, cs, y, cu_seqlens, chunk_offsets, chunk_seq, scale, T, H,
    LOG: tl.constexpr, A_COMPLEX: tl.constexpr, Q_COMPLEX: tl.constexpr, K_COMPLEX: tl.constexpr,
    IS_VARLEN: tl.constexpr, BT: tl.constexpr, BH: tl.constexpr,
):  # fmt: skip
    """y of every chunk from the state entering it; grid (cdiv(H, BH), slots)."""
    i_h, j = tl.program_id(0), tl.program_id(1)
    t0, eos = _chunk_of(cu_seqlens, chunk_offsets, chunk_seq, j, T, BT, IS_VARLEN)
    o_h = i_h * BH + tl.arange(0, BH)
    m_h = o_h < H
    off, mask, _ = _tile(t0, eos, o_h, m_h, H, BT)
    hr, hi = _load_state(cs, j, o_h, m_h, H)
    _output_tile(q, k, v, la, y, off, mask, hr, hi, scale, LOG, A_COMPLEX, Q_COMPLEX, K_COMPLEX, BT)


@triton.jit
def siso_adjoint_summary_kernel(  # type: ignore[no-untyped-def]
    q, la, dy, summary, cu_seqlens, chunk_offsets, chunk_seq, scale, T, H,
    LOG: tl.constexpr, A_COMPLEX: tl.constexpr, Q_COMPLEX: tl.constexpr, IS_VARLEN: tl.constexpr,
    BT: tl.constexpr, BH: tl.constexpr,
):  # fmt: skip
    """Each chunk's adjoint map g_in ↦ A g_in + B at its first row: summary [slots, 2, H, 2]."""
    i_h, j = tl.program_id(0), tl.program_id(1)
    t0, eos = _chunk_of(cu_seqlens, chunk_offsets, chunk_seq, j, T, BT, IS_VARLEN)
    o_h = i_h * BH + tl.arange(0, BH)
    m_h = o_h < H
    off, mask, o_t = _tile(t0, eos, o_h, m_h, H, BT)
    pr, pi, br, bi, _ = _adjoint_tile(
        q, la, dy, off, mask, o_t, eos, m_h, H, scale, LOG, A_COMPLEX, Q_COMPLEX
    )
    _store_state(summary, 2 * j, o_h, m_h, H, _row(pr, 0, BT), _row(pi, 0, BT))
    _store_state(summary, 2 * j + 1, o_h, m_h, H, _row(br, 0, BT), _row(bi, 0, BT))


@triton.jit
def siso_adjoint_carry_kernel(  # type: ignore[no-untyped-def]
    summary, dht, la, gin, dh0, cu_seqlens, chunk_offsets, T, H,
    LOG: tl.constexpr, A_COMPLEX: tl.constexpr, HAS_DHT: tl.constexpr, IS_VARLEN: tl.constexpr,
    BT: tl.constexpr, BH: tl.constexpr,
):  # fmt: skip
    """The adjoint entering every chunk from its right (gin) and dh0, last chunk to first."""
    i_h, i_n = tl.program_id(0), tl.program_id(1)
    bos, eos, c0 = _bounds(cu_seqlens, chunk_offsets, i_n, T, BT, IS_VARLEN)
    o_h = i_h * BH + tl.arange(0, BH)
    m_h = o_h < H
    if HAS_DHT:
        gr, gi = _load_state(dht, i_n, o_h, m_h, H)
    else:
        gr = tl.zeros([BH], dtype=tl.float32)
        gi = tl.zeros([BH], dtype=tl.float32)
    n_chunks = tl.cdiv(eos - bos, BT)
    for j in range(0, n_chunks):
        c = c0 + n_chunks - 1 - j
        _store_state(gin, c, o_h, m_h, H, gr, gi)
        pr, pi = _load_state(summary, 2 * c, o_h, m_h, H)
        br, bi = _load_state(summary, 2 * c + 1, o_h, m_h, H)
        gr, gi = pr * gr - pi * gi + br, pr * gi + pi * gr + bi
    _store_initial_grad(la, dh0, bos, i_n, o_h, m_h, H, gr, gi, LOG, A_COMPLEX)


@triton.jit
def siso_chunk_grad_kernel(  # type: ignore[no-untyped-def]
    q, k, v, la, dy, cs, gin, dq, dk, dv, dla, cu_seqlens, chunk_offsets, chunk_seq, scale, T, H,
    LOG: tl.constexpr, A_COMPLEX: tl.constexpr, Q_COMPLEX: tl.constexpr, K_COMPLEX: tl.constexpr,
    IS_VARLEN: tl.constexpr, BT: tl.constexpr, BH: tl.constexpr,
):  # fmt: skip
    """Every gradient of every chunk from the states before it and the adjoints after it."""
    i_h, j = tl.program_id(0), tl.program_id(1)
    t0, eos = _chunk_of(cu_seqlens, chunk_offsets, chunk_seq, j, T, BT, IS_VARLEN)
    o_h = i_h * BH + tl.arange(0, BH)
    m_h = o_h < H
    off, mask, o_t = _tile(t0, eos, o_h, m_h, H, BT)
    gr, gi = _load_state(gin, j, o_h, m_h, H)
    s0r, s0i = _load_state(cs, j, o_h, m_h, H)
    _grad_tile(
        q, k, v, la, dy, dq, dk, dv, dla, off, mask, o_t, t0, eos, m_h, H, scale, gr, gi, s0r, s0i,
        LOG, A_COMPLEX, Q_COMPLEX, K_COMPLEX, BT,
    )  # fmt: skip
