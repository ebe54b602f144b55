"""The public GateLoop operator: one signature, every mode of the paper plus the chunked one."""

from __future__ import annotations

import typing
from dataclasses import replace
from functools import partial
from typing import Literal

from torch import Tensor

from gateloop._validation import check_choice, check_positive_int
from gateloop.ops._inputs import OpInputs, validate_sequence_inputs
from gateloop.ops.attention import gate_loop_attention
from gateloop.ops.chunked import gate_loop_chunk
from gateloop.ops.recurrent import gate_loop_recurrent
from gateloop.ops.scan import gate_loop_scan
from gateloop.ops.siso_chunked import gate_loop_siso_chunked
from gateloop.ops.siso_fused import fused_siso_applies, gate_loop_siso_fused
from gateloop.ops.softmax import gate_loop_softmax
from gateloop.ops.triton import BACKENDS, gate_loop_triton, use_triton  # never imports Triton itself
from gateloop.ops.varlen import check_cu_seqlens, check_varlen_state, run_torch_varlen

Mode = Literal["chunk", "recurrent", "scan", "attention", "softmax"]
MODES: tuple[str, ...] = typing.get_args(Mode)
Backend = Literal["auto", "triton", "fla", "torch"]


def gate_loop(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor | None = None,
    *,
    log_a: Tensor | None = None,
    mode: Mode = "chunk",
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int | None = None,
    backend: Backend = "auto",
    cu_seqlens: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """GateLoop (Katsch 2023): h_n = a_n ⊙ h_{n-1} + k_nᵀ v_n,  y_n = Re(scale · q_n h_n).

    Args:
        q: r|c(B L H dk) output gates (complex allowed in every mode).
        k: r|c(B L H dk) input gates.
        v: r(B L H dv) values.
        a: r|c(B L H dk) per-key transitions, or r|c(B L H 1) one per head (broadcast over dk).
            Real means real transitions (negative reals rotate by π). ``a == 0`` is a hard reset.
        log_a: the complex logarithm of ``a`` instead (real part log|a|, imaginary part the phase;
            -inf real part means a == 0). Exactly one of ``a`` / ``log_a``. Layers pass ``log_a``:
            it stays exact where gates saturate. In the log-space modes (chunk, attention, softmax)
            log|a| is floored at -30 (float32) / -80 (float64), below the dtype's resolution, and
            gradients w.r.t. an ``a`` below that floor are zero (use ``log_a`` or the recurrent/scan
            modes for exact gradients at vanishing gates).
        mode: "chunk" (default, fast, O(L)), "recurrent" (O(L) loop), "scan" (associative scan,
            O(L log L)), "attention" (surrogate attention, O(L²)), "softmax" (its softmax
            generalisation, O(L²), no recurrent state).
        scale: output scale; None means 1.0 (linear modes) or dk ** -0.5 (softmax).
        initial_state: r|c(B H dk dv) state before the first token, or None (zeros).
        output_final_state: also return the state after the last token.
        chunk_size: chunk length for ``mode="chunk"`` (default 32; 64 for the pure-PyTorch SISO
            form; measured in benchmarks/chunk_size.py); one longer than L is taken as L.
        backend: "auto" (Triton kernels for CUDA tensors in modes chunk/recurrent when the ``cuda``
            extra is installed, the PyTorch paths otherwise), "triton" (our exact complex scan for
            dk = dv = 1, fla-core's kernels for wider heads), "fla" (fla-core's kernels for every
            head size, to A/B them; CPU tensors under TRITON_INTERPRET=1 only, for both) or "torch".
        cu_seqlens: int32/int64 [N+1] offsets of N sequences packed into a B = 1 batch (FlashAttention
            convention); each sequence starts from zeros or its ``initial_state`` [N, H, dk, dv],
            and the final state is [N, H, dk, dv].

    Returns:
        y: r(B L H dv) in v's dtype (float16/bfloat16 inputs are computed in float32),
        final_state: c(B H dk dv) (complex64, complex128 for float64) or None.

    Example:
        >>> import torch
        >>> from gateloop import gate_loop
        >>> B, L, H, dk, dv = 2, 100, 4, 16, 16
        >>> q, k = torch.randn(2, B, L, H, dk)
        >>> v = torch.randn(B, L, H, dv)
        >>> log_a = torch.complex(torch.nn.functional.logsigmoid(torch.randn(B, L, H, dk)),
        ...                       torch.randn(B, L, H, dk))
        >>> y, h = gate_loop(q, k, v, log_a=log_a, output_final_state=True)
        >>> y.shape, h.shape, h.dtype
        (torch.Size([2, 100, 4, 16]), torch.Size([2, 4, 16, 16]), torch.complex64)
    """
    check_choice("mode", mode, MODES)
    check_choice("backend", backend, BACKENDS)
    if not isinstance(output_final_state, bool):
        raise TypeError(f"output_final_state must be a bool, got {output_final_state!r}")
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
        if mode != "chunk":
            raise ValueError(
                f"chunk_size applies to mode='chunk' only; got chunk_size={chunk_size} with mode={mode!r}"
            )
    if mode == "softmax" and (initial_state is not None or output_final_state):
        raise ValueError(
            "mode='softmax' has no recurrent state (the softmax normaliser is not linear): "
            "initial_state must be None and output_final_state False; use a linear mode for states"
        )
    dk = q.shape[-1] if isinstance(q, Tensor) and q.ndim == 4 else 1
    h0 = initial_state if cu_seqlens is None else None  # packed: [N, H, dk, dv], checked below
    inputs = validate_sequence_inputs(
        q, k, v, a, log_a, h0, scale, default_scale=dk**-0.5 if mode == "softmax" else None
    )
    if cu_seqlens is not None:  # packed sequences: one initial state per sequence
        cu_seqlens = check_cu_seqlens(cu_seqlens, inputs.q)
        inputs = replace(
            inputs, initial_state=check_varlen_state(initial_state, inputs, cu_seqlens.numel() - 1)
        )
    if chunk_size is not None:
        # a chunk longer than the sequence is one chunk of the sequence: the same results, without
        # padding to (and allocating) chunk_size
        chunk_size = min(chunk_size, max(1, inputs.q.shape[1]))
    if use_triton(backend, mode, inputs, chunk_size):
        y, final = gate_loop_triton(
            inputs,
            mode=mode,
            output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
            reduce_to_fla=backend == "fla",
        )
        return y.to(inputs.out_dtype), final
    run = partial(_run_torch, mode=mode, output_final_state=output_final_state, chunk_size=chunk_size)
    if cu_seqlens is None:
        y, final = run(inputs)
    else:
        stateful = mode == "softmax" or inputs.initial_state is not None or output_final_state
        y, final = run_torch_varlen(run, inputs, cu_seqlens, stateful=stateful)
    return y.to(inputs.out_dtype), final


def _run_torch(
    inputs: OpInputs, *, mode: str, output_final_state: bool, chunk_size: int | None
) -> tuple[Tensor, Tensor | None]:
    """The PyTorch paths (and the compiled CPU SISO kernel) for one batch of sequences."""
    args = (inputs.q, inputs.k, inputs.v, inputs.transitions)
    if mode == "softmax":
        return gate_loop_softmax(*args, scale=inputs.scale), None
    common = {
        "scale": inputs.scale,
        "initial_state": inputs.initial_state,
        "output_final_state": output_final_state,
    }
    siso = inputs.q.shape[-1] == 1 and inputs.v.shape[-1] == 1  # dk = dv = 1, the paper's setting
    if mode == "chunk" and fused_siso_applies(inputs.q, inputs.k, inputs.v):
        y, final = gate_loop_siso_fused(*args, **common)  # compiled, one pass over time, no chunks
    elif mode == "chunk" and siso:
        y, final = gate_loop_siso_chunked(*args, **common, chunk_size=chunk_size)  # element-wise
    elif mode == "chunk":
        y, final = gate_loop_chunk(*args, **common, chunk_size=chunk_size)  # matmuls, doubled keys
    elif mode == "recurrent":
        y, final = gate_loop_recurrent(*args, **common)
    elif mode == "scan":
        y, final = gate_loop_scan(*args, **common)
    else:
        y, final = gate_loop_attention(*args, **common)
    return y, final
