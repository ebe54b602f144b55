"""Multi-dimensional heads on fla's gated-linear-attention kernels (per-key and per-head gates).

The doubled real problem of ``_rotation.py`` is exactly GLA: ``chunk_gla`` (``fused_recurrent_gla``
for mode="recurrent") with the per-key log-gate [ℓ, ℓ], or ``chunk_simple_gla`` with one scalar
log-gate per head. Every exponent inside those kernels is <= 0 (fla factorises relative to each
sub-chunk's first row and uses pairwise decays on the diagonal), so the floored log|a| of
``Transitions.as_log`` is all they need.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor

from gateloop.ops.triton._rotation import RealProblem

# tl.dot on GPUs needs every block dimension >= 16; narrower heads are zero-padded to it (zero
# query/key columns and zero value columns add nothing to y or to the state rows that are kept)
_MIN_DIM = 16


def _pad_last(t: Tensor, size: int) -> Tensor:
    return t if t.shape[-1] >= size else F.pad(t, (0, size - t.shape[-1]))


def gla_forward(
    problem: RealProblem,
    v: Tensor,
    log_mag: Tensor,
    state: Tensor | None,
    *,
    scale: float,
    mode: str,
    output_final_state: bool,
    cu_seqlens: Tensor | None,
    work_dtype: torch.dtype,
    kernels: SimpleNamespace,
) -> tuple[Tensor, Tensor | None]:
    """y (B, L, H, dv) in ``work_dtype`` and the real final state (N, H, dk', dv) float32.

    problem: q', k' (B, L, H, dk'); v: (B, L, H, dv); log_mag: (B, L, H, dk|1) floored log|a|;
    state: real initial state (N, H, dk', dv) float32 or None.
    """
    dk2, dv = problem.q.shape[-1], v.shape[-1]
    K, V = max(dk2, _MIN_DIM), max(dv, _MIN_DIM)
    q = _pad_last(problem.q.to(work_dtype), K).contiguous()  # (B, L, H, K)
    k = _pad_last(problem.k.to(work_dtype), K).contiguous()  # (B, L, H, K)
    vv = _pad_last(v.to(work_dtype), V).contiguous()  # (B, L, H, V)
    # why float32: gates are cumulated inside the kernels; fla keeps them in float32
    g = log_mag.float()  # (B, L, H, dk|1)
    h0 = None
    if state is not None:
        h0 = F.pad(state, (0, V - dv, 0, K - dk2)).contiguous()  # (N, H, K, V)
    per_head = g.shape[-1] == 1 and dk2 > 1
    common = {
        "scale": scale,
        "initial_state": h0,
        "output_final_state": output_final_state,
        "cu_seqlens": cu_seqlens,
    }
    if per_head and mode == "chunk":
        y, final = kernels.chunk_simple_gla(q, k, vv, g=g[..., 0].contiguous(), **common)  # g: (B, L, H)
    else:
        if per_head:
            gk = g.expand(*g.shape[:-1], dk2)  # (B, L, H, dk'): one gate per head, on every key column
        elif problem.doubled:
            gk = torch.cat([g, g], dim=-1)  # (B, L, H, 2dk): the gate [ℓ, ℓ] of the doubled key
        else:
            gk = g  # (B, L, H, dk)
        gk = _pad_last(gk, K).contiguous()  # (B, L, H, K); padded columns: gate 0 (no decay), key 0
        if mode == "chunk":
            y, final = kernels.chunk_gla(q, k, vv, gk, **common)
        else:
            y, final = kernels.fused_recurrent_gla(q, k, vv, gk=gk, **common)
    y = y[..., :dv]  # (B, L, H, dv)
    if final is not None:
        final = final[..., :dk2, :dv]  # (N, H, dk', dv)
    return y, final
