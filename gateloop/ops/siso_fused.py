"""Fused CPU kernel for one-dimensional heads (dk = dv = 1): the recurrence in one pass.

For the paper's SISO layers the state per (batch, head) is a single complex number, so the
sequential recurrence does O(1) work per element and is bound by memory traffic. The pure-PyTorch
chunked form (``siso_chunked.py``) makes ~100 full passes over [B, L, H] tensors for a forward and
backward; the compiled kernel in ``csrc/siso_scan.cpp`` reads each input once and writes each
output once per direction. It is exact (no e^{-G} factorisation, no log floor: log|a| = -inf is
an exact reset with exact gradients), real q/k/v only, float32/float64 on CPU. ``gate_loop``'s
chunk mode uses it automatically when it applies and the kernel could be built. Numerics:
docs/numerics.md, 'SISO: the compiled kernel'.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from gateloop.ops._extension import extension_available, load_extension
from gateloop.ops._inputs import Transitions, complex_dtype_of

_SOURCE = "siso_scan.cpp"
_CHECKPOINT_EVERY = 64  # kChunk in csrc/siso_scan.cpp: steps between the forward's saved states


# The kernel's two entry points as torch.library custom ops: opaque to torch.compile (no graph
# break, shapes known from the fake implementations) and dispatched like any aten op.
@torch.library.custom_op("gateloop::siso_forward", mutates_args=())
def _siso_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_a: Tensor,
    h0r: Tensor,
    h0i: Tensor,
    scale: float,
    store: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    ext = load_extension(_SOURCE)
    assert ext is not None, "fused_siso_applies() is checked before the call"
    return tuple(ext.siso_forward(q, k, v, log_a, h0r, h0i, scale, store))  # type: ignore[return-value]


@_siso_forward.register_fake
def _(q, k, v, log_a, h0r, h0i, scale, store):  # type: ignore[no-untyped-def]
    B, L, H = q.shape
    chunks = (L + _CHECKPOINT_EVERY - 1) // _CHECKPOINT_EVERY
    ck = (B, chunks, H) if store else (0,)
    return (
        q.new_empty(q.shape),
        h0r.new_empty(h0r.shape),
        h0i.new_empty(h0i.shape),
        q.new_empty(ck),
        q.new_empty(ck),
    )


@torch.library.custom_op("gateloop::siso_backward", mutates_args=())
def _siso_backward(
    dy: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_a: Tensor,
    ckr: Tensor,
    cki: Tensor,
    dfr: Tensor,
    dfi: Tensor,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    ext = load_extension(_SOURCE)
    assert ext is not None
    return tuple(ext.siso_backward(dy, q, k, v, log_a, ckr, cki, dfr, dfi, scale))  # type: ignore[return-value]


@_siso_backward.register_fake
def _(dy, q, k, v, log_a, ckr, cki, dfr, dfi, scale):  # type: ignore[no-untyped-def]
    d_log_a = log_a.new_empty(log_a.shape)
    return (
        *(q.new_empty(q.shape) for _ in range(3)),
        d_log_a,
        dfr.new_empty(dfr.shape),
        dfi.new_empty(dfi.shape),
    )


def fused_siso_applies(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether ``gate_loop_siso_fused`` handles these inputs (and the kernel is available)."""
    return (
        q.shape[-1] == 1
        and v.shape[-1] == 1
        and q.device.type == "cpu"
        and v.dtype in (torch.float32, torch.float64)
        and not q.is_complex()
        and not k.is_complex()
        and extension_available(_SOURCE)
    )


class _FusedSisoRecurrence(torch.autograd.Function):
    """(q, k, v, log_a, Re h0, Im h0) -> (y, Re h_L, Im h_L); tensors [B, L, H] or [B, H].

    ``log_a`` is complex (log|a| + i·phase) or real (log|a|, real positive a). Taking the complex
    tensor whole, rather than its .real/.imag views, lets the kernel write the complex gradient
    directly, instead of autograd's two zero-filled select_backward buffers and a complex add.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        log_a: Tensor,
        h0r: Tensor,
        h0i: Tensor,
        scale: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        # (B, L, H, 2) (log|a|, phase) pairs, or (B, L, H) log|a|: the kernel forms a itself
        log_a_real = torch.view_as_real(log_a.contiguous()) if log_a.is_complex() else log_a.contiguous()
        # the states are stored for the backward only when some input needs a gradient
        store = any(ctx.needs_input_grad)
        # ckr, cki: the state entering every 64-step chunk (the backward recomputes the rest)
        y, fr, fi, ckr, cki = _siso_forward(q, k, v, log_a_real, h0r, h0i, scale, store)
        if store:
            ctx.save_for_backward(q, k, v, log_a_real, ckr, cki)
        ctx.scale = scale
        ctx.complex_log = log_a.is_complex()
        return y, fr, fi

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, dy: Tensor | None, dfr: Tensor | None, dfi: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        q, k, v, log_a_real, ckr, cki = ctx.saved_tensors
        B, _, H = q.shape
        dy = torch.zeros_like(q) if dy is None else dy.contiguous()
        dfr = q.new_zeros(B, H) if dfr is None else dfr.contiguous()
        dfi = q.new_zeros(B, H) if dfi is None else dfi.contiguous()
        dq, dk, dv, d_log_a, dh0r, dh0i = _siso_backward(
            dy, q, k, v, log_a_real, ckr, cki, dfr, dfi, ctx.scale
        )
        if ctx.complex_log:
            d_log_a = torch.view_as_complex(d_log_a)  # (B, L, H): written interleaved by the kernel
        return dq, dk, dv, d_log_a, dh0r, dh0i, None


def _unit(t: Tensor) -> Tensor:
    """(B, L, H, 1) -> contiguous (B, L, H).

    squeeze, not [..., 0]: its backward is a free unsqueeze, where select's would zero-fill a
    new gradient buffer and copy into it."""
    return t.squeeze(-1).contiguous()


def gate_loop_siso_fused(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    transitions: Transitions,
    *,
    scale: float,
    initial_state: Tensor | None,
    output_final_state: bool,
) -> tuple[Tensor, Tensor | None]:
    """q, k, v: r(B L H 1); transitions (B L H 1); state c(B H 1 1). See ``fused_siso_applies``."""
    B, _, H, _ = q.shape
    if transitions.log_a is not None:
        # no floor needed: the kernel multiplies by e^{log|a|} and never divides, so -inf is an
        # exact reset with an exact (zero) gradient
        log_a = transitions.log_a
    else:
        log_mag, phase = transitions.as_log()  # floored, with the grad_log/conj(a) gradient
        log_a = log_mag if phase is None else torch.complex(log_mag, phase)
    if initial_state is None:
        h0r, h0i = (
            q.new_zeros(B, H),
            q.new_zeros(B, H),
        )  # two tensors: autograd.Function under torch.compile refuses aliased inputs
    else:
        h0 = initial_state[..., 0, 0]  # (B, H)
        h0r, h0i = h0.real.contiguous(), h0.imag.contiguous()
    y, fr, fi = _FusedSisoRecurrence.apply(
        _unit(q),
        _unit(k),
        _unit(v),
        log_a.squeeze(-1),
        h0r,
        h0i,
        scale,
    )
    final = None
    if output_final_state:
        final = torch.complex(fr, fi).to(complex_dtype_of(v.dtype))[..., None, None]  # (B, H, 1, 1)
    return y[..., None], final
