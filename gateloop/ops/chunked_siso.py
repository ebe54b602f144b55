"""Chunked mode for one-dimensional heads (dk = dv = 1, the paper's SISO setting).

Matmuls with head dimension 1 waste the hardware, so the scalar recurrence h_n = a_n h_{n-1} + x_n
(x = k v, one complex scalar per head) is computed element-wise in two passes:

1. inside every chunk, from a zero state and for all chunks at once,
   h_loc_n = e^{G_n + iΦ_n} · cumsum_m(e^{-G_m - iΦ_m} x_m)   (chunk-local G, Φ);
   chunks whose log-decay range exceeds ``safe_range`` use an exact Hillis-Steele scan instead;
2. the chunk-end states are combined across chunks with a scan over the N = L/c chunks and
   added back: h_n = h_loc_n + e^{G_n + iΦ_n} h_start(chunk).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gateloop.ops._chunking import from_chunks, safe_range, to_chunks
from gateloop.ops._inputs import Transitions, complex_dtype_of
from gateloop.ops.scan import associative_scan_linear

DEFAULT_SISO_CHUNK_SIZE = 64


def gate_loop_chunk_siso(
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
    """q, k: r|c(B L H 1); v: r(B L H 1); transitions (B L H 1); state c(B H 1 1)."""
    B, L, H, _ = q.shape
    c = chunk_size or DEFAULT_SISO_CHUNK_SIZE
    real = v.dtype
    log_mag, phase = transitions.as_log()  # (B, L, H, 1)
    rotating = phase is not None or q.is_complex() or k.is_complex() or initial_state is not None
    dtype = complex_dtype_of(real) if rotating else real
    lc = to_chunks(log_mag, c)[..., 0]  # (B, H, N, c)
    G = torch.cumsum(lc, dim=-1)  # (B, H, N, c), chunk-local
    x = to_chunks(k.to(dtype) * v, c)[..., 0]  # (B, H, N, c): k_m v_m
    limit = safe_range(real)
    # why the clamp: e^{-G} overflows in unsafe chunks; those chunks are recomputed exactly below
    G_inc = (-G).clamp(max=limit)
    if phase is None:
        w = torch.exp(G).to(dtype)  # (B, H, N, c): Π_{j<=n in chunk} a_j
        w_inv = torch.exp(G_inc).to(dtype)
        pc = None
    else:
        pc = to_chunks(phase, c)[..., 0]  # (B, H, N, c)
        Phi = torch.cumsum(pc, dim=-1)
        w = torch.exp(torch.complex(G, Phi))  # (B, H, N, c)
        w_inv = torch.exp(torch.complex(G_inc, -Phi))
    h_loc = w * torch.cumsum(w_inv * x, dim=-1)  # (B, H, N, c): pass 1, zero start per chunk

    unsafe = (-G).amax(dim=-1) > limit  # (B, H, N)
    if bool(unsafe.any()):
        idx = unsafe.flatten().nonzero().squeeze(1)  # (n_unsafe,)
        l_u = lc.flatten(0, 2).index_select(0, idx)  # (n_unsafe, c)
        if pc is None:
            a_u = torch.exp(l_u).to(dtype)
        else:
            a_u = torch.exp(torch.complex(l_u, pc.flatten(0, 2).index_select(0, idx)))
        _, exact = associative_scan_linear(a_u, x.flatten(0, 2).index_select(0, idx), dim=-1)
        h_loc = h_loc.flatten(0, 2).index_copy(0, idx, exact).view_as(h_loc)

    # pass 2: states at chunk ends, then at chunk starts
    chunk_a = w[..., -1]  # (B, H, N): Π over the chunk
    prefix, ends = associative_scan_linear(chunk_a, h_loc[..., -1], dim=-1)  # (B, H, N)
    if initial_state is not None:
        h0 = initial_state[..., 0, 0]  # (B, H)
        ends = ends + prefix * h0[..., None]
        first = h0[..., None]
    else:
        first = ends.new_zeros(B, H, 1)
    starts = torch.cat([first, ends[..., :-1]], dim=-1)  # (B, H, N)
    h = h_loc + w * starts[..., None]  # (B, H, N, c)

    qc = to_chunks(q, c)[..., 0]  # (B, H, N, c)
    y = qc.to(dtype) * h
    y = (y.real if y.is_complex() else y) * scale
    y = from_chunks(y[..., None], L)  # (B, L, H, 1)
    final = ends[..., -1].to(complex_dtype_of(real))[..., None, None] if output_final_state else None
    return y, final
