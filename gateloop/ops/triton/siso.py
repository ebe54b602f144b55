"""One-dimensional heads (dk = dv = 1, the paper's LM layer) on fla's HGRN recurrences.

docs/numerics.md, 'Doubled keys' at dk = 1: u_n = e^{-iΦ_n} h_n obeys
u_n = e^{ℓ_n} u_{n-1} + (k_n e^{-iΦ_n}) v_n, two *real* diagonal recurrences (Re u, Im u) sharing
one real gate: HGRN's h_n = e^{g_n} h_{n-1} + x_n over 2H channels. The readout is
y_n = q'_n · [Re u_n, Im u_n] = Re(q_n e^{iΦ_n} u_n), i.e. q (cos Φ Re u − sin Φ Im u) for real q.
"""

from __future__ import annotations

from types import SimpleNamespace

from torch import Tensor

from gateloop.ops.triton._rotation import RealProblem


def siso_forward(
    problem: RealProblem,
    v: Tensor,
    log_mag: Tensor,
    state: Tensor | None,
    *,
    scale: float,
    mode: str,
    output_final_state: bool,
    cu_seqlens: Tensor | None,
    kernels: SimpleNamespace,
) -> tuple[Tensor, Tensor | None]:
    """y (B, L, H, 1) float32 and the real final state (N, H, c, 1) float32 (c = 2, or 1 all-real).

    problem: q', k' (B, L, H, c); v: (B, L, H, 1); log_mag: (B, L, H, 1) floored log|a|;
    state: real initial state (N, H, c, 1) float32 or None.
    """
    B, L, H, c = problem.k.shape
    # why float32: the recurrence is element-wise and memory-bound; its state is float32 anyway
    x = (problem.k.float() * v.float()).reshape(B, L, H * c)  # (B, L, H·c): (k e^{-iΦ}) v, [re, im] per head
    g = log_mag.float().expand(B, L, H, c).reshape(B, L, H * c)  # (B, L, H·c): [ℓ, ℓ] per head
    h0 = None if state is None else state.reshape(state.shape[0], H * c).contiguous()  # (N, H·c)
    if mode == "chunk" and h0 is None and not output_final_state and cu_seqlens is None:
        # chunk_hgrn: parallel over chunks, but its backward ignores the final state's and the
        # initial state's gradients and it has no varlen; used only where none of them exists
        u, final = kernels.chunk_hgrn(x.contiguous(), g.contiguous())
    else:
        u, final = kernels.fused_recurrent_hgrn(
            x.contiguous(),
            g.contiguous(),
            initial_state=h0,
            output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
        )
    u = u.reshape(B, L, H, c)  # (B, L, H, c): [Re u, Im u]
    y = scale * (problem.q.float() * u).sum(dim=-1, keepdim=True)  # (B, L, H, 1)
    if final is not None:
        final = final.reshape(-1, H, c, 1)  # (N, H, c, 1)
    return y, final
