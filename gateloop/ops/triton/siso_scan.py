"""Our exact complex SISO scan (dk = dv = 1) on Triton: launches and autograd.

The kernels are in ``siso_kernels.py`` (imported on the first call, so that ``import gateloop``
never imports Triton). Inputs are the validated ``OpInputs`` of ``gate_loop``: q, k real or
complex, v real, the transitions as ``log_a`` (taken as is: no floor, -inf is an exact reset) or
as ``a`` (multiplied directly: no log, no angle), one initial state per sequence.
"""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from gateloop.ops._inputs import OpInputs

CHUNK = 64  # steps per scanned tile (BT); the forward keeps one state per chunk for the backward
CHANNELS = 32  # adjacent heads per program (BH): 128 contiguous bytes per row and tensor
_module: ModuleType | None = None


def _kernels() -> ModuleType:
    """``siso_kernels``, imported on first use (after the interpreter patches when interpreting)."""
    global _module
    if _module is None:
        from gateloop.ops.triton._runtime import prepare_interpreter

        prepare_interpreter()
        from gateloop.ops.triton import siso_kernels

        _module = siso_kernels
    return _module


def _pairs(t: Tensor) -> Tensor:
    """A [B, L, H, 1] tensor as contiguous [B·L, H] (real) or [B·L, H, 2] (complex as re, im)."""
    flat = t.reshape(-1, t.shape[2])  # (B·L, H)
    return torch.view_as_real(flat.contiguous()) if flat.is_complex() else flat.contiguous()


class _Layout(NamedTuple):
    """Where every sequence and chunk lies: N sequences of ``length`` rows (or packed by
    ``cu_seqlens``), ``slots`` chunk slots (varlen: a bound, no host sync), and for varlen each
    sequence's first chunk and each slot's sequence (-1 on a spare slot)."""

    n_seq: int
    length: int
    slots: int
    cu_seqlens: Tensor | None
    chunk_offsets: Tensor | None
    chunk_seq: Tensor | None


def _layout(cu_seqlens: Tensor | None, batch: int, rows: int) -> _Layout:
    if cu_seqlens is None:
        length = rows // batch
        return _Layout(batch, length, batch * triton_cdiv(length, CHUNK), None, None, None)
    n_seq = cu_seqlens.numel() - 1
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]  # (N,)
    chunks = (lengths + CHUNK - 1) // CHUNK  # (N,)
    ends = torch.cumsum(chunks, 0)  # (N,) one past each sequence's last chunk
    # why a bound, not the sum: the exact count would need a device-to-host copy
    slots = triton_cdiv(rows, CHUNK) + n_seq
    slot = torch.arange(slots, device=cu_seqlens.device, dtype=ends.dtype)  # (slots,)
    seq = torch.searchsorted(ends, slot, right=True)  # (slots,) = N past the last chunk
    chunk_seq = torch.where(seq < n_seq, seq, -1).to(torch.int32)
    return _Layout(n_seq, rows, slots, cu_seqlens, (ends - chunks).to(torch.int32), chunk_seq)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def split_over_chunks(programs: int, device: torch.device) -> bool:
    """Whether to parallelise over chunks too: when one program per (sequence, head block) would
    leave the GPU's multiprocessors idle (fewer than two programs each). The split reads k, v, a
    once more forward and q, dy, a once more backward for L/64 times the programs."""
    if device.type != "cuda":
        return False  # the interpreter runs programs one by one: no occupancy to win
    return programs < 2 * torch.cuda.get_device_properties(device).multi_processor_count


class _SisoScan(torch.autograd.Function):
    """(q, k, v, transitions, h0) as real/pair tensors -> (y [B·L, H], final state [N, H, 2])."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        trans: Tensor,
        h0: Tensor | None,
        scale: float,
        log: bool,
        cu_seqlens: Tensor | None,
        batch: int,
        split: bool | None,
    ) -> tuple[Tensor, Tensor]:
        kern = _kernels()
        rows, H = v.shape
        lay = _layout(cu_seqlens, batch, rows)
        blocks = triton_cdiv(H, CHANNELS)
        split = split_over_chunks(blocks * lay.n_seq, v.device) if split is None else split
        store = any(ctx.needs_input_grad)
        y = torch.empty_like(v)  # (B·L, H)
        final = v.new_empty(lay.n_seq, H, 2)  # (N, H, 2)
        # the state entering every chunk: the split's output pass and the backward start from it
        states = v.new_empty(lay.slots if store or split else 1, H, 2)
        flags = _flags(q, k, trans, log, cu_seqlens)
        where = (lay.cu_seqlens, lay.chunk_offsets)
        if split:
            summary = v.new_empty(2 * lay.slots, H, 2)  # (P, S) of every chunk
            kern.siso_chunk_summary_kernel[(blocks, lay.slots)](
                k, v, trans, summary, *where, lay.chunk_seq, lay.length, H, **_without(flags, "Q_COMPLEX")
            )
            kern.siso_chunk_carry_kernel[(blocks, lay.n_seq)](
                summary, h0, final, states, *where, lay.length, H, HAS_H0=h0 is not None,
                **_without(flags, "LOG", "A_COMPLEX", "Q_COMPLEX", "K_COMPLEX"),
            )  # fmt: skip
            kern.siso_chunk_output_kernel[(blocks, lay.slots)](
                q, k, v, trans, states, y, *where, lay.chunk_seq, scale, lay.length, H, **flags
            )
        else:
            kern.siso_scan_fwd_kernel[(blocks, lay.n_seq)](
                q, k, v, trans, h0, y, final, states, *where, scale, lay.length, H,
                HAS_H0=h0 is not None, STORE_CS=store, **flags,
            )  # fmt: skip
        if store:
            ctx.save_for_backward(q, k, v, trans, states, lay.cu_seqlens, lay.chunk_offsets, lay.chunk_seq)
        ctx.setup = (scale, log, lay.n_seq, lay.length, lay.slots, h0 is not None, split)
        return y, final

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, dy: Tensor | None, dfinal: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        q, k, v, trans, states, cu_seqlens, chunk_offsets, chunk_seq = ctx.saved_tensors
        scale, log, n_seq, length, slots, has_h0, split = ctx.setup
        kern = _kernels()
        H = v.shape[1]
        blocks = triton_cdiv(H, CHANNELS)
        dy = torch.zeros_like(v) if dy is None else dy.contiguous()
        dht = None if dfinal is None else dfinal.contiguous()
        dq, dk, dv, dtrans = (torch.empty_like(t) for t in (q, k, v, trans))
        dh0 = v.new_empty(n_seq, H, 2)
        flags = _flags(q, k, trans, log, cu_seqlens)
        where = (cu_seqlens, chunk_offsets)
        if split:
            summary = v.new_empty(2 * slots, H, 2)  # (A, B) of every chunk's adjoint map
            incoming = v.new_empty(slots, H, 2)  # the adjoint entering every chunk from its right
            kern.siso_adjoint_summary_kernel[(blocks, slots)](
                q, trans, dy, summary, *where, chunk_seq, scale, length, H, **_without(flags, "K_COMPLEX")
            )
            kern.siso_adjoint_carry_kernel[(blocks, n_seq)](
                summary, dht, trans, incoming, dh0, *where, length, H, HAS_DHT=dht is not None,
                **_without(flags, "Q_COMPLEX", "K_COMPLEX"),
            )  # fmt: skip
            kern.siso_chunk_grad_kernel[(blocks, slots)](
                q, k, v, trans, dy, states, incoming, dq, dk, dv, dtrans, *where, chunk_seq, scale,
                length, H, **flags,
            )  # fmt: skip
        else:
            kern.siso_scan_bwd_kernel[(blocks, n_seq)](
                q, k, v, trans, dy, states, dht, dq, dk, dv, dtrans, dh0, *where, scale, length, H,
                HAS_DHT=dht is not None, **flags,
            )  # fmt: skip
        return dq, dk, dv, dtrans, dh0 if has_h0 else None, None, None, None, None, None


def _without(flags: dict[str, object], *names: str) -> dict[str, object]:
    return {name: value for name, value in flags.items() if name not in names}


def _flags(q: Tensor, k: Tensor, trans: Tensor, log: bool, cu_seqlens: Tensor | None) -> dict[str, object]:
    """The kernels' constexprs: which tensors are (re, im) pairs, whether ``trans`` is log a, the tiles."""
    return {
        "LOG": log,
        "A_COMPLEX": trans.ndim == 3,
        "Q_COMPLEX": q.ndim == 3,
        "K_COMPLEX": k.ndim == 3,
        "IS_VARLEN": cu_seqlens is not None,
        "BT": CHUNK,
        "BH": CHANNELS,
    }


def siso_scan(
    inputs: OpInputs,
    *,
    output_final_state: bool,
    cu_seqlens: Tensor | None = None,
    split: bool | None = None,
) -> tuple[Tensor, Tensor | None]:
    """y (B, L, H, 1) float32 and the final state (N, H, 1, 1) complex64 or None.

    ``inputs`` finite, validated, float32 compute; ``cu_seqlens`` checked (N + 1 offsets, B = 1).
    ``split``: parallelise over chunks too (None: ``split_over_chunks`` decides).
    """
    B, L, H, _ = inputs.q.shape
    transitions = inputs.transitions
    log = transitions.log_a is not None
    trans = transitions.log_a if log else transitions.a
    assert trans is not None
    h0 = inputs.initial_state  # (N, H, 1, 1) complex or None
    h0_pairs = None if h0 is None else torch.view_as_real(h0[..., 0, 0].contiguous())  # (N, H, 2)
    offsets = None if cu_seqlens is None else cu_seqlens.to(torch.int32)
    y, final = _SisoScan.apply(
        _pairs(inputs.q), _pairs(inputs.k), _pairs(inputs.v), _pairs(trans), h0_pairs,
        inputs.scale, log, offsets, B, split,
    )  # fmt: skip
    y = y.reshape(B, L, H, 1)
    if not output_final_state:
        return y, None
    return y, torch.view_as_complex(final)[..., None, None]  # (N, H, 1, 1)
