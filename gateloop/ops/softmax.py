"""Softmax mode: the paper's generalisation of the surrogate attention to softmax (eq 22-23).

    y_n = Σ_{m<=n} softmax_m( Re(scale · q_n · (k_m ⊙ Π_{j=m+1..n} a_j)) ) v_m

There is no recurrent form (the normaliser is not a linear state), so initial and final states
do not exist in this mode; the dispatcher rejects them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gateloop.ops._inputs import Transitions
from gateloop.ops._nonfinite import causal_nonfinite
from gateloop.ops.attention import cumulative_logs, surrogate_scores


@causal_nonfinite
def gate_loop_softmax(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    transitions: Transitions,
    *,
    scale: float,
) -> Tensor:
    """q, k: r|c(B L H dk); v: r(B L H dv); transitions (B L H dk|1). Returns r(B L H dv)."""
    scores = surrogate_scores(q, k, *cumulative_logs(transitions))  # (B, H, L, L), zero above the diagonal
    logits = (scores.real if scores.is_complex() else scores) * scale
    L = q.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()  # (L, L): n >= m
    logits = logits.masked_fill(~causal, float("-inf"))  # eq 22: -inf above the diagonal
    weights = torch.softmax(logits, dim=-1)  # (B, H, L, L)
    return (weights @ v.transpose(1, 2)).transpose(1, 2)  # (B, L, H, dv)
