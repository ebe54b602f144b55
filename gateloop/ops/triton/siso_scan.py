"""Our exact complex SISO scan (dk = dv = 1) on Triton: launches and autograd.

The kernels are in ``siso_kernels.py`` (imported on the first call, so that ``import gateloop``
never imports Triton). Inputs are the validated ``OpInputs`` of ``gate_loop``: q, k real or
complex, v real, the transitions as ``log_a`` (taken as is: no floor, -inf is an exact reset) or
as ``a`` (multiplied directly: no log, no angle), one initial state per sequence.
"""

from __future__ import annotations

from types import ModuleType

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


def _chunk_offsets(cu_seqlens: Tensor | None, batch: int, length: int) -> tuple[Tensor | None, int]:
    """Each sequence's first chunk index (varlen), and an upper bound on the number of chunks."""
    if cu_seqlens is None:
        return None, batch * triton_cdiv(length, CHUNK)
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]  # (N,)
    chunks = (lengths + CHUNK - 1) // CHUNK  # (N,)
    offsets = torch.cumsum(chunks, 0) - chunks  # (N,) exclusive prefix sum, no host sync
    # why a bound, not the sum: the exact count would need a device-to-host copy
    return offsets, triton_cdiv(length, CHUNK) + lengths.numel()


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


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
    ) -> tuple[Tensor, Tensor]:
        kern = _kernels()
        rows, H = v.shape
        n_seq = batch if cu_seqlens is None else cu_seqlens.numel() - 1
        length = rows // batch if cu_seqlens is None else rows
        offsets, n_chunks = _chunk_offsets(cu_seqlens, batch, length)
        store = any(ctx.needs_input_grad)
        y = torch.empty_like(v)  # (B·L, H)
        final = v.new_empty(n_seq, H, 2)  # (N, H, 2)
        # the state entering every chunk, for the backward to recompute h_{n-1} from
        states = v.new_empty(n_chunks if store else 1, H, 2)
        grid = (triton_cdiv(H, CHANNELS), n_seq)
        kern.siso_scan_fwd_kernel[grid](
            q, k, v, trans, h0, y, final, states, cu_seqlens, offsets, scale, length, H,
            **_flags(q, k, trans, log), HAS_H0=h0 is not None, STORE_CS=store,
            IS_VARLEN=cu_seqlens is not None, BT=CHUNK, BH=CHANNELS,
        )  # fmt: skip
        if store:
            ctx.save_for_backward(q, k, v, trans, states, cu_seqlens, offsets)
        ctx.setup = (scale, log, length, n_seq, h0 is not None)
        return y, final

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, dy: Tensor | None, dfinal: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        q, k, v, trans, states, cu_seqlens, offsets = ctx.saved_tensors
        scale, log, length, n_seq, has_h0 = ctx.setup
        H = v.shape[1]
        dy = torch.zeros_like(v) if dy is None else dy.contiguous()
        dq, dk, dv, dtrans = (torch.empty_like(t) for t in (q, k, v, trans))
        dh0 = v.new_empty(n_seq, H, 2)
        grid = (triton_cdiv(H, CHANNELS), n_seq)
        _kernels().siso_scan_bwd_kernel[grid](
            q, k, v, trans, dy, states, None if dfinal is None else dfinal.contiguous(),
            dq, dk, dv, dtrans, dh0, cu_seqlens, offsets, scale, length, H,
            **_flags(q, k, trans, log), HAS_DHT=dfinal is not None,
            IS_VARLEN=cu_seqlens is not None, BT=CHUNK, BH=CHANNELS,
        )  # fmt: skip
        return dq, dk, dv, dtrans, dh0 if has_h0 else None, None, None, None, None


def _flags(q: Tensor, k: Tensor, trans: Tensor, log: bool) -> dict[str, bool]:
    """Which tensors are (re, im) pairs, and whether ``trans`` is log a."""
    return {"LOG": log, "A_COMPLEX": trans.ndim == 3, "Q_COMPLEX": q.ndim == 3, "K_COMPLEX": k.ndim == 3}


def siso_scan(
    inputs: OpInputs, *, output_final_state: bool, cu_seqlens: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """y (B, L, H, 1) float32 and the final state (N, H, 1, 1) complex64 or None.

    ``inputs`` finite, validated, float32 compute; ``cu_seqlens`` checked (N + 1 offsets, B = 1).
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
        inputs.scale, log, offsets, B,
    )  # fmt: skip
    y = y.reshape(B, L, H, 1)
    if not output_final_state:
        return y, None
    return y, torch.view_as_complex(final)[..., None, None]  # (N, H, 1, 1)
