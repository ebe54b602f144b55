"""Exact scores for the chunks whose log-decay range is too wide for the factorised form.

``chunked.py`` computes every chunk's diagonal block as (q' e^{G_n}) · (k' e^{-G_m}), which is
exact only while e^{-G_m} stays representable (docs/numerics.md, 'The safe range'). The chunks
beyond it get exact pairwise decays e^{G_n - G_m} here ('Exact pairwise fallback').

Which chunks those are is data, so eager mode picks them with one host check. Under
``torch.compile`` that check would break the graph (dynamo cannot branch on a tensor's value), so
the compiled path calls the same computation as two ``torch.library`` custom ops, forward and
backward: opaque to dynamo, with shapes known from their fake implementations. The backward is
written out (``pairwise_scores_backward``, ``realify_backward``) because a custom op's body runs
below autograd; a test checks it against autograd through the eager function.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from gateloop.ops._doubled_keys import realify, realify_backward
from gateloop.ops._pairwise_scores import pairwise_scores, pairwise_scores_backward


def _rows(t: Tensor, idx: Tensor) -> Tensor:
    """The chunks ``idx`` of a (B, H, N, c, ...) tensor: (n_unsafe, c, ...)."""
    return t.flatten(0, 2).index_select(0, idx)


def _unsafe_index(unsafe: Tensor) -> Tensor:
    """Flat indices (n_unsafe,) of the True entries of ``unsafe`` (B, H, N)."""
    return unsafe.flatten().nonzero().squeeze(1)


def with_exact_unsafe_scores(
    scores: Tensor, unsafe: Tensor, qc: Tensor, kc: Tensor, lc: Tensor, Phi: Tensor | None, doubled: bool
) -> Tensor:
    """``scores`` (B, H, N, c, c) with the unsafe chunks' blocks recomputed by ``pairwise_scores``.

    unsafe: (B, H, N) bool; qc, kc: (B, H, N, c, dk); lc (log|a|, floored), Phi (chunk-local
    cumulative phase): (B, H, N, c, d).
    """
    idx = _unsafe_index(unsafe)  # (n_unsafe,)
    q2_u, k2_u, _ = realify(_rows(qc, idx), _rows(kc, idx), None if Phi is None else _rows(Phi, idx))
    exact = pairwise_scores(q2_u, k2_u, _rows(lc, idx), doubled)  # (n_unsafe, c, c)
    return scores.flatten(0, 2).index_copy(0, idx, exact).reshape(scores.shape)


def with_exact_unsafe_scores_backward(
    grad: Tensor, unsafe: Tensor, qc: Tensor, kc: Tensor, lc: Tensor, Phi: Tensor | None, doubled: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Gradients of ``with_exact_unsafe_scores`` for (scores, qc, kc, lc, Phi) given ``grad``."""
    idx = _unsafe_index(unsafe)  # (n_unsafe,)

    def scatter(rows_grad: Tensor, like: Tensor) -> Tensor:
        return like.new_zeros(like.shape).flatten(0, 2).index_copy(0, idx, rows_grad).reshape(like.shape)

    q_u, k_u, l_u = _rows(qc, idx), _rows(kc, idx), _rows(lc, idx)  # (n_unsafe, c, ...)
    phi_u = None if Phi is None else _rows(Phi, idx)  # (n_unsafe, c, d)
    q2_u, k2_u, _ = realify(q_u, k_u, phi_u)  # (n_unsafe, c, dk')
    dq2, dk2, d_l = pairwise_scores_backward(_rows(grad, idx), q2_u, k2_u, l_u, doubled)
    dq, dk, d_phi = realify_backward(dq2, dk2, q_u, k_u, phi_u)
    # the unsafe blocks of ``scores`` were overwritten: their gradient stops there
    d_scores = grad.flatten(0, 2).index_fill(0, idx, 0).reshape(grad.shape)
    d_Phi = None if Phi is None or d_phi is None else scatter(d_phi, Phi)
    return d_scores, scatter(dq, qc), scatter(dk, kc), scatter(d_l, lc), d_Phi


@torch.library.custom_op("gateloop::exact_unsafe_scores", mutates_args=())
def _exact_forward(
    scores: Tensor, unsafe: Tensor, qc: Tensor, kc: Tensor, lc: Tensor, Phi: Tensor | None, doubled: bool
) -> Tensor:
    # why contiguous: the fake implementation promises contiguous outputs (and an output may not
    # alias an input)
    if not bool(unsafe.any()):
        return scores.clone(memory_format=torch.contiguous_format)
    return with_exact_unsafe_scores(scores, unsafe, qc, kc, lc, Phi, doubled).contiguous()


@_exact_forward.register_fake
def _(scores, unsafe, qc, kc, lc, Phi, doubled):  # type: ignore[no-untyped-def]
    return scores.new_empty(scores.shape)


@torch.library.custom_op("gateloop::exact_unsafe_scores_backward", mutates_args=())
def _exact_backward(
    grad: Tensor,
    unsafe: Tensor,
    qc: Tensor,
    kc: Tensor,
    lc: Tensor,
    Phi: Tensor | None,
    doubled: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients for (scores, qc, kc, lc, Phi); a zero-size tensor for Phi when it is None."""
    d_scores, dq, dk, d_lc, d_Phi = with_exact_unsafe_scores_backward(grad, unsafe, qc, kc, lc, Phi, doubled)
    d_Phi = lc.new_zeros(0) if d_Phi is None else d_Phi
    # why contiguous: the fake implementation promises contiguous gradients, whatever the inputs' strides
    return tuple(g.contiguous() for g in (d_scores, dq, dk, d_lc, d_Phi))  # type: ignore[return-value]


@_exact_backward.register_fake
def _(grad, unsafe, qc, kc, lc, Phi, doubled):  # type: ignore[no-untyped-def]
    phi_shape = (0,) if Phi is None else Phi.shape
    return (
        grad.new_empty(grad.shape),
        qc.new_empty(qc.shape),
        kc.new_empty(kc.shape),
        lc.new_empty(lc.shape),
        lc.new_empty(phi_shape),
    )


class _ExactUnsafeScores(torch.autograd.Function):
    """``with_exact_unsafe_scores`` as one opaque op with its gradient, for compiled graphs."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        scores: Tensor,
        unsafe: Tensor,
        qc: Tensor,
        kc: Tensor,
        lc: Tensor,
        Phi: Tensor | None,
        doubled: bool,
    ) -> Tensor:
        ctx.save_for_backward(unsafe, qc, kc, lc, Phi)
        ctx.doubled = doubled
        return _exact_forward(scores, unsafe, qc, kc, lc, Phi, doubled)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        unsafe, qc, kc, lc, Phi = ctx.saved_tensors
        d_scores, d_qc, d_kc, d_lc, d_phi = _exact_backward(
            grad.contiguous(), unsafe, qc, kc, lc, Phi, ctx.doubled
        )
        return d_scores, None, d_qc, d_kc, d_lc, None if Phi is None else d_phi, None


def exact_unsafe_scores_op(
    scores: Tensor, unsafe: Tensor, qc: Tensor, kc: Tensor, lc: Tensor, Phi: Tensor | None, doubled: bool
) -> Tensor:
    """``with_exact_unsafe_scores`` without a data-dependent branch in the caller's graph."""
    return _ExactUnsafeScores.apply(scores, unsafe, qc, kc, lc, Phi, doubled)  # type: ignore[no-any-return]
