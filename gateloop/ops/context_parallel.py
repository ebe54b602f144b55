"""Context parallelism by state passing: GateLoop over a sequence split across the ranks of a
process group, exact, forward and backward.

Rank r holds the positions [s_r, e_r) of every sequence (the ranks in order cover it). Because
the transitions are diagonal, the state entering rank r's slice is a short recurrence over the
slices before it (docs/numerics.md has the derivation)::

    y⁰, f_r  = gate_loop(q, k, v, log_a) on the slice from a zero state     (the usual op, any mode)
    D_t      = exp(Σ_{s_r <= u <= t} log a_u)                                (decay since the slice began)
    A_r      = D_{e_r - 1}                                                   (the slice's whole decay)
    h_0      = initial_state (or 0);   h_{r+1} = A_r ⊙ h_r + f_r            (over the gathered (A, f))
    y_t      = y⁰_t + scale · Re(q_t (D_t ⊙ h_r))                           (the prefix state, read out)
    state    = A_r ⊙ h_r + f_r                                               (after the slice)

The only communication is one all-gather of (f_r, A_r) per call (packed into one buffer), whose
backward is one all-reduce: per rank B·H·dk·dv + B·H·d complex numbers sent (d = dk, or 1 for per-head
transitions), i.e. 8·B·H·(dk·dv + d) bytes in complex64, independent of the slice length; the
backward all-reduces P times that. Everything else is the op's own forward and backward on the
slice, plus one cumulative sum (in float64, so that long phase sums keep their precision) and one
readout einsum.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import FunctionCtx

from gateloop._validation import check_choice
from gateloop.ops.gate_loop import gate_loop

CP_MODES = ("chunk", "recurrent", "scan")  # the modes with a recurrent state to pass on


class _AllGather(torch.autograd.Function):
    """``all_gather`` with its gradient: every rank's gradients for a rank's tensor, summed
    (an all-reduce, which every backend has, where NCCL alone would have reduce-scatter)."""

    @staticmethod
    def forward(ctx: FunctionCtx, t: Tensor, group: Any) -> Tensor:  # type: ignore[override]
        ctx.group = group
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, t.contiguous(), group=group)
        return torch.stack(parts)  # (P, ...)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[dist.get_rank(ctx.group)], None


class _Tie(torch.autograd.Function):
    """``y`` unchanged, made to depend on ``gathered``: every rank's backward then reaches the
    gather's all-reduce (a rank whose output reads nothing gathered, rank 0 without an initial
    state, would otherwise skip it and leave the others waiting). No arithmetic joins them, so a
    non-finite state of a later slice cannot reach an earlier one's output."""

    @staticmethod
    def forward(ctx: FunctionCtx, y: Tensor, gathered: Tensor) -> Tensor:  # type: ignore[override]
        ctx.shape, ctx.dtype = gathered.shape, gathered.dtype
        return y.view_as(y)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return grad, grad.new_zeros(ctx.shape, dtype=ctx.dtype)


def _exchange(f: Tensor, whole: Tensor, group: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Every rank's (f, A) in rank order, (P, B, H, dk, dv) and (P, B, H, d), through one
    differentiable all-gather of both packed as reals (one collective forward, one backward: the
    ranks' backward passes cannot reach two of them in different orders); also the packed
    gather, for ``_Tie``."""
    parts = (torch.view_as_real(f), torch.view_as_real(whole))
    packed = torch.cat([p.flatten() for p in parts])  # (n,)
    gathered = _AllGather.apply(packed, group)  # type: ignore[no-untyped-call]  # (P, n)
    split = gathered.split([p.numel() for p in parts], dim=1)
    fs = torch.view_as_complex(split[0].reshape(-1, *parts[0].shape))
    As = torch.view_as_complex(split[1].reshape(-1, *parts[1].shape))
    return fs, As, gathered


def gate_loop_context_parallel(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    log_a: Tensor,
    group: Any = None,
    mode: str = "chunk",
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """``gate_loop`` on this rank's slice of a sequence split across ``group`` (default: the
    world), equal to ``gate_loop`` on the whole sequence restricted to the slice.

    Args:
        q, k, v, log_a: this rank's positions, [B, L_r, H, ·] as ``gate_loop`` takes them (L_r may
            differ between ranks, and be shorter than a chunk; B, H and the widths may not).
        group: the process group whose ranks hold the slices, in rank order.
        mode: "chunk", "recurrent" or "scan" (the attention forms have no state to pass on).
        scale: as ``gate_loop``'s (None: 1.0).
        initial_state: c(B H dk dv), the state before the whole sequence's first token: the same
            tensor on every rank, or None (zeros) on every rank.
        output_final_state: also return the state after this rank's slice (the last rank's is the
            sequence's final state).

    Every rank of ``group`` must call it, and backpropagate through its ``y`` (one collective
    each way). The gradient each rank gets for ``initial_state`` is its slice's share: their sum
    over the ranks (an all-reduce, as data parallelism does for parameters) is the whole
    sequence's. Packed documents cross slices through ``log_a``: a document start is a = 0
    (log_a = -inf) at its first position, including a slice's first (``slice_begins_document``,
    which the GateLoop layer applies for ``document_ids`` or ``cu_seqlens``).
    """
    check_choice("mode", mode, CP_MODES)
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "context parallelism needs an initialised process group (torch.distributed.init_process_group, "
            "or torchrun); none is"
        )
    y, f = gate_loop(
        q, k, v, log_a=log_a, mode=mode, scale=scale, output_final_state=True, chunk_size=chunk_size
    )
    assert f is not None
    # why complex128: the cumulative phase of a long slice loses float32 precision (as in the
    # chunk form); the state f is complex whatever log_a is
    decay = torch.exp(torch.cumsum(log_a.to(torch.complex128), dim=1))  # (B, L_r, H, d): D_t
    whole = decay[:, -1]  # (B, H, d): A_r
    fs, As, gathered = _exchange(f, whole.to(f.dtype), group)  # (P, B, H, dk, dv), (P, B, H, d)
    rank = dist.get_rank(group)
    h = torch.zeros_like(f) if initial_state is None else initial_state.to(f.dtype).expand_as(f)
    for j in range(rank):  # the state entering this rank's slice
        h = As[j][..., None] * h + fs[j]  # (B, H, dk, dv)
    qd = q.to(f.dtype) * decay.to(f.dtype)  # (B, L_r, H, dk): q_t ⊙ D_t
    readout = torch.einsum("blhk,bhkv->blhv", qd, h).real  # (B, L_r, H, dv)
    y = _Tie.apply(y + (1.0 if scale is None else scale) * readout.to(y.dtype), gathered)
    final = As[rank][..., None] * h + fs[rank] if output_final_state else None
    return y, final


def slice_begins_document(document_ids: Tensor, group: Any = None) -> Tensor:
    """Whether this rank's slice of a sequence split across ``group`` begins a new document, per
    row: bool [B], True where the slice's first position is not in the previous rank's last
    position's document (a document that starts exactly at a slice boundary; always False on the
    first rank). ``document_ids`` int [B, L_r] must be numbered alike on every rank (the whole
    sequence's ids, sliced); the starts inside the slice are ``layers.masks.document_starts``.
    One all-gather of each rank's first and last ids (2·B integers); no gradient."""
    edges = torch.stack([document_ids[:, 0], document_ids[:, -1]], dim=1).contiguous()  # (B, 2)
    parts = [torch.empty_like(edges) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, edges, group=group)
    rank = dist.get_rank(group)
    if rank == 0:
        return torch.zeros_like(document_ids[:, 0], dtype=torch.bool)  # (B,)
    return parts[rank - 1][:, 1] != document_ids[:, 0]  # (B,)


def slice_document_ids(cu_seqlens: Tensor, length: int, group: Any = None) -> Tensor:
    """Document ids [1, L_r] of this rank's slice of one packed sequence (batch of one) whose
    documents start at the whole sequence's offsets ``cu_seqlens`` (FlashAttention's convention:
    0, ..., total; the same tensor on every rank). One all-gather of the slice lengths."""
    lengths = torch.tensor([length], dtype=torch.long, device=cu_seqlens.device)
    parts = [torch.empty_like(lengths) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, lengths, group=group)
    offsets = torch.cat(parts).cumsum(0)  # (P,): where each slice ends
    rank = dist.get_rank(group)
    begin = int(offsets[rank - 1]) if rank > 0 else 0
    if int(offsets[-1]) != int(cu_seqlens[-1]):
        raise ValueError(
            f"cu_seqlens must cover the whole sequence the ranks hold ({int(offsets[-1])} positions), "
            f"got cu_seqlens[-1] = {int(cu_seqlens[-1])}"
        )
    positions = torch.arange(begin, begin + length, device=cu_seqlens.device)  # (L_r,)
    return torch.bucketize(positions, cu_seqlens[1:-1].to(positions.dtype), right=True)[None]  # (1, L_r)
