"""Exact scores e^{G_n - G_m} (q'_n · k'_m) of one chunk, for the chunks whose log-decay range is
too wide for the factorised form (docs/numerics.md, 'Exact pairwise fallback'): pairwise decays
within sub-chunks of ``SUB_CHUNK``, factorised between them, and the gradient written out (it runs
inside a custom op, below autograd). ``_full_pairwise_scores`` is the naive form they are tested
against.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from gateloop.ops._chunking import safe_range
from gateloop.ops._doubled_keys import double_keys

SUB_CHUNK = 16  # the exact path's sub-chunk: pairwise decays within it, factorised between
MIN_SUB_CHUNK = 8  # below this (chunk sizes with no divisor in 8..16) the whole chunk is pairwise


def _pairwise_decay(log_mag: Tensor, dtype: torch.dtype) -> Tensor:
    """e^{G_n - G_m} for m <= n, 0 above the diagonal: (n, c, c, d) from log_mag (n, c, d)."""
    c = log_mag.shape[-2]
    # why float64: a chunk lands here because its cumulative log-decay is large, exactly where a
    # float32 difference G_n - G_m would cancel its leading digits (docs/numerics.md, 'Exact
    # pairwise fallback')
    G = torch.cumsum(log_mag.to(torch.float64), dim=-2)  # (n, c, d)
    dG = G[:, :, None, :] - G[:, None, :, :]  # (n, c_n, c_m, d)
    causal = torch.ones(c, c, dtype=torch.bool, device=log_mag.device).tril()[..., None]  # (c, c, 1)
    dG = torch.where(causal, dG, torch.full_like(dG, float("-inf")))  # mask before exp
    return torch.exp(dG).to(dtype)  # why the cast: each decay is <= 1, exact enough in dtype


def _full_pairwise_scores(q2: Tensor, k2: Tensor, log_mag: Tensor, doubled: bool) -> Tensor:
    """Σ_d q'_nd k'_md e^{G_nd - G_md} with every pairwise decay materialised: (n, c, c)."""
    decay = _pairwise_decay(log_mag, q2.dtype)  # (n, c, c, d)
    if decay.shape[-1] == 1:
        return (q2 @ k2.transpose(-1, -2)) * decay[..., 0]  # (n, c, c)
    decay = double_keys(decay, doubled)  # (n, c, c, dk')
    return torch.einsum("nid,njd,nijd->nij", q2, k2, decay)  # (n, c, c)


def _full_pairwise_scores_backward(
    grad: Tensor, q2: Tensor, k2: Tensor, log_mag: Tensor, doubled: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``_full_pairwise_scores`` for (q2, k2, log_mag) given ``grad`` (n, c, c)."""
    decay = _pairwise_decay(log_mag, q2.dtype)  # (n, c, c, d): as in the forward
    if decay.shape[-1] == 1:
        g_dec = grad * decay[..., 0]  # (n, c, c)
        dq2, dk2 = g_dec @ k2, g_dec.transpose(-1, -2) @ q2  # (n, c, dk')
        d_dG = (g_dec * (q2 @ k2.transpose(-1, -2)))[..., None]  # (n, c, c, 1): dL/d(G_n - G_m)
    else:
        decay = double_keys(decay, doubled)  # (n, c, c, dk')
        dq2 = torch.einsum("nij,njd,nijd->nid", grad, k2, decay)  # (n, c, dk')
        dk2 = torch.einsum("nij,nid,nijd->njd", grad, q2, decay)  # (n, c, dk')
        d_dG = grad[..., None] * q2[:, :, None, :] * k2[:, None, :, :] * decay  # (n, c, c, dk')
        d_dG = _halves_summed(d_dG, doubled)  # (n, c, c, dk)
    # why float64: the gradient of G goes through the same float64 cumulative sum as the forward
    d_G = d_dG.to(torch.float64).sum(dim=2) - d_dG.to(torch.float64).sum(dim=1)  # (n, c, d)
    return dq2, dk2, _cumsum_adjoint(d_G).to(log_mag.dtype)


def _halves_summed(t: Tensor, doubled: bool) -> Tensor:
    """(..., dk') -> (..., dk): both halves of a doubled key share one decay."""
    if not doubled:
        return t
    dk = t.shape[-1] // 2
    return t[..., :dk] + t[..., dk:]


def _cumsum_adjoint(d_G: Tensor) -> Tensor:
    """The gradient of log_mag from that of G = cumsum(log_mag) along dim -2."""
    return d_G.flip(-2).cumsum(-2).flip(-2)


def sub_chunk_size(c: int) -> int:
    """The largest divisor of ``c`` up to ``SUB_CHUNK``; ``c`` itself (one block) for small
    chunks, or where that divisor is below ``MIN_SUB_CHUNK``."""
    s = max(d for d in range(1, min(c, SUB_CHUNK) + 1) if c % d == 0)
    return c if c <= SUB_CHUNK or s < MIN_SUB_CHUNK else s


class _SubChunkDecays(NamedTuple):
    """Decays relative to each query sub-chunk's reference point r_i (the position before it; the
    chunk's start, G = 0, for the first), for the keys up to the sub-chunk's end."""

    to_query: Tensor  # e^{G_n - G_{r_i}} <= 1 for n in sub-chunk i: (n, S, s, d)
    # e^{G_{r_i} - G_m}: <= 1 for m <= r_i, clamped at e^{limit} in sub-chunk i, 0 after: (n, S, c, d)
    from_key: Tensor
    unsafe: Tensor  # (n, S) bool: sub-chunk i's own decay range exceeds the limit


def _sub_chunk_decays(log_mag: Tensor, s: int, dtype: torch.dtype, limit: float) -> _SubChunkDecays:
    n, c, d = log_mag.shape
    S = c // s
    # why float64: as in _pairwise_decay, differences of large cumulative sums
    G = torch.cumsum(log_mag.to(torch.float64), dim=-2)  # (n, c, d)
    G_ref = torch.cat([G.new_zeros(n, 1, d), G[:, s - 1 : c - 1 : s]], dim=1)  # (n, S, d): G_{r_i}
    to_query = torch.exp(G.view(n, S, s, d) - G_ref[:, :, None])  # (n, S, s, d)
    ends = (torch.arange(S, device=G.device) + 1) * s  # (S,): sub-chunk i ends before (i+1)·s
    upto = torch.arange(c, device=G.device)[None, :] < ends[:, None]  # (S, c): m in sub-chunks <= i
    dG = G_ref[:, :, None] - G[:, None]  # (n, S, c, d): G_{r_i} - G_m
    own = dG.view(n, S, S, s, d).diagonal(dim1=1, dim2=2)  # (n, s, d, S): m in sub-chunk i
    unsafe = own.amax(dim=(1, 2)) > limit  # (n, S)
    # why the clamp: e^{G_r - G_m} for m inside an unsafe sub-chunk would overflow; those diagonal
    # blocks are recomputed pairwise, so the clamped values never reach the output
    dG = torch.where(
        upto[..., None], dG.clamp(max=limit), torch.full_like(dG, float("-inf"))
    )  # mask before exp
    # why the cast: the decays are <= e^{limit}, representable in dtype by the limit's choice
    return _SubChunkDecays(to_query.to(dtype), torch.exp(dG).to(dtype), unsafe)


def _diagonal_blocks(t: Tensor, s: int) -> Tensor:
    """(n, c, c) -> (n·S, s, s): the blocks of sub-chunk i's rows and columns."""
    n, c, _ = t.shape
    S = c // s
    return t.view(n, S, s, S, s).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2).reshape(n * S, s, s)


def _with_diagonal_blocks(t: Tensor, blocks: Tensor, s: int) -> Tensor:
    """``t`` (n, c, c) with its diagonal blocks replaced by ``blocks`` (n·S, s, s)."""
    n, c, _ = t.shape
    S = c // s
    eye = torch.eye(S, dtype=torch.bool, device=t.device).view(1, S, 1, S, 1)  # block (i, i)
    placed = blocks.view(n, S, s, 1, s).expand(n, S, s, S, s)  # (n, S, s, S, s)
    return torch.where(eye, placed, t.view(n, S, s, S, s)).reshape(n, c, c)


def _sub_chunks(t: Tensor, s: int) -> Tensor:
    """(n, c, x) -> (n·S, s, x)."""
    return t.reshape(-1, s, t.shape[-1])


def pairwise_scores(q2: Tensor, k2: Tensor, log_mag: Tensor, doubled: bool) -> Tensor:
    """Exact diagonal-block scores Σ_d q'_nd k'_md e^{G_nd - G_md} for a batch of chunks.

    q2, k2: (n, c, dk'); log_mag: (n, c, d). Returns (n, c, c), zero above the diagonal.
    The chunk is cut into sub-chunks of s (``sub_chunk_size``); the rows of sub-chunk i factorise
    through its reference point r_i, (q'_n e^{G_n - G_{r_i}}) · (k'_m e^{G_{r_i} - G_m}): both
    factors <= 1 for earlier sub-chunks, and within sub-chunk i the same safe-range rule as the
    chunk level, with pairwise decays for the (rare) sub-chunks beyond it.
    """
    n, c, dk2 = q2.shape
    s = sub_chunk_size(c)
    if s == c:
        return _full_pairwise_scores(q2, k2, log_mag, doubled)
    dec = _sub_chunk_decays(log_mag, s, q2.dtype, safe_range(q2.dtype))
    q_dec = q2.view(n, c // s, s, dk2) * double_keys(dec.to_query, doubled)  # (n, S, s, dk')
    k_dec = k2[:, None] * double_keys(dec.from_key, doubled)  # (n, S, c, dk')
    scores = (q_dec @ k_dec.transpose(-1, -2)).reshape(n, c, c)  # (n, c, c)
    causal = torch.ones(c, c, dtype=torch.bool, device=q2.device).tril()  # (c, c): n >= m
    scores = torch.where(causal, scores, torch.zeros((), dtype=scores.dtype, device=q2.device))
    idx = dec.unsafe.flatten().nonzero().squeeze(1)  # (n_unsafe,) sub-chunks
    if idx.numel() == 0:
        return scores
    exact = _full_pairwise_scores(
        *(_sub_chunks(t, s).index_select(0, idx) for t in (q2, k2, log_mag)), doubled
    )
    return _with_diagonal_blocks(scores, _diagonal_blocks(scores, s).index_copy(0, idx, exact), s)


def pairwise_scores_backward(
    grad: Tensor, q2: Tensor, k2: Tensor, log_mag: Tensor, doubled: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``pairwise_scores`` for (q2, k2, log_mag) given ``grad`` (n, c, c)."""
    n, c, dk2 = q2.shape
    s = sub_chunk_size(c)
    if s == c:
        return _full_pairwise_scores_backward(grad, q2, k2, log_mag, doubled)
    S, d = c // s, log_mag.shape[-1]
    dec = _sub_chunk_decays(log_mag, s, q2.dtype, safe_range(q2.dtype))
    idx = dec.unsafe.flatten().nonzero().squeeze(1)  # (n_unsafe,) sub-chunks
    causal = torch.ones(c, c, dtype=torch.bool, device=q2.device).tril()  # (c, c)
    g = torch.where(causal, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))  # (n, c, c)
    d_log = torch.zeros_like(log_mag)
    dq2, dk2_ = torch.zeros_like(q2), torch.zeros_like(k2)
    if idx.numel():  # the pairwise blocks, and no gradient into the factorised values they replace
        blocks = (_sub_chunks(t, s).index_select(0, idx) for t in (q2, k2, log_mag))
        g_blocks = _diagonal_blocks(g, s)  # (n·S, s, s)
        grads = _full_pairwise_scores_backward(g_blocks.index_select(0, idx), *blocks, doubled)
        dq2, dk2_, d_log = (
            _sub_chunks(z, s).index_copy(0, idx, gz).view(z.shape)
            for z, gz in zip((dq2, dk2_, d_log), grads, strict=True)
        )
        g = _with_diagonal_blocks(g, g_blocks.index_fill(0, idx, 0), s)
    e_q, e_k = double_keys(dec.to_query, doubled), double_keys(dec.from_key, doubled)
    q_dec = q2.view(n, S, s, dk2) * e_q  # (n, S, s, dk')
    k_dec = k2[:, None] * e_k  # (n, S, c, dk')
    g = g.view(n, S, s, c)  # rows grouped by query sub-chunk
    d_qdec = g @ k_dec  # (n, S, s, dk')
    d_kdec = g.transpose(-1, -2) @ q_dec  # (n, S, c, dk')
    dq2 = dq2 + (d_qdec * e_q).view(n, c, dk2)
    dk2_ = dk2_ + (d_kdec * e_k).sum(dim=1)

    def per_decay(t: Tensor) -> Tensor:  # (..., dk') -> (..., d): dL/d(exponent)
        t = _halves_summed(t, doubled)
        return t.sum(-1, keepdim=True) if d == 1 else t

    # why float64: G's gradient goes through the float64 cumulative sum of the forward. A clamped
    # exponent lies in a recomputed block, whose gradient is zero here, so the clamp needs no mask
    d_exp_q = per_decay(d_qdec * q_dec).to(torch.float64)  # (n, S, s, d): d/d(G_n - G_{r_i})
    d_exp_k = per_decay(d_kdec * k_dec).to(torch.float64)  # (n, S, c, d): d/d(G_{r_i} - G_m)
    d_ref = d_exp_k.sum(dim=2) - d_exp_q.sum(dim=2)  # (n, S, d): into G_{r_i}
    d_G = d_exp_q.reshape(n, c, d) - d_exp_k.sum(dim=1)  # (n, c, d)
    d_G[:, s - 1 : c - 1 : s] += d_ref[:, 1:]  # r_0 is the chunk's start (G = 0): no gradient
    return dq2, dk2_, d_log + _cumsum_adjoint(d_G).to(log_mag.dtype)
