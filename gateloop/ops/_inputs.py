"""Validation and normalisation of the operator's inputs, shared by every mode.

Every public entry point (``gate_loop``, ``gate_loop_step``) calls into here first, so that each
mode receives tensors of one compute precision, in the documented shapes, and a ``Transitions``
object that hands out the transitions either as ``a`` (for the modes that multiply) or as a
clamped complex logarithm (for the modes that work in log space).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gateloop._validation import check_tensor

_HALF = (torch.float16, torch.bfloat16)
_REAL = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_COMPLEX = (torch.complex64, torch.complex128)

# Smallest log-magnitude a log-space mode works with. `a == 0` is legal (a hard reset) but
# log 0 = -inf makes differences of cumulative sums NaN; e^floor is far below the dtype's
# resolution (float32: e^-30 ~ 1e-13 vs eps 1.2e-7; float64: e^-80 ~ 2e-35 vs eps 2.2e-16), so a
# floored gate forgets everything the dtype can represent (docs/numerics.md, 'Stability floors').
_LOG_FLOOR = {torch.float32: -30.0, torch.float64: -80.0}


def log_floor(dtype: torch.dtype) -> float:
    """The floor applied to log|a| in log-space modes for the real compute dtype ``dtype``."""
    return _LOG_FLOOR[dtype]


def complex_dtype_of(real: torch.dtype) -> torch.dtype:
    return torch.complex128 if real == torch.float64 else torch.complex64


def real_dtype_of(dtype: torch.dtype) -> torch.dtype:
    if dtype == torch.complex128:
        return torch.float64
    if dtype == torch.complex64:
        return torch.float32
    return dtype


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}"


def _check_float_or_complex(name: str, t: Tensor, allow_complex: bool) -> None:
    """``TypeError`` for a dtype outside float16..float64 (and complex64/128 where allowed)."""
    ok = t.dtype in _REAL or (allow_complex and t.dtype in _COMPLEX)
    if not ok:
        kinds = "a floating-point or complex" if allow_complex else "a real floating-point"
        raise TypeError(f"{name} must be {kinds} tensor, got dtype {t.dtype}")


class _LogOfTransition(torch.autograd.Function):
    """(log|a| floored, angle(a)) with the holomorphic-log gradient grad_a = grad_log / conj(a).

    Below the floor the gate is a hard reset and carries no gradient (documented limitation of
    the log-space modes for ``a`` input; pass ``log_a`` or use ``recurrent``/``scan``). The
    float32 rounding of grad_a grows like 1/|a|: docs/numerics.md, 'Gradients with respect to a'.
    """

    @staticmethod
    def forward(ctx, a: Tensor, floor: float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        magnitude = a.abs()  # (B, L, H, dk|1)
        # why the clamp: log 0 = -inf; e^floor is below the dtype's resolution (see _LOG_FLOOR)
        log_mag = torch.log(magnitude.clamp_min(math.exp(floor)))
        phase = torch.angle(a)
        ctx.save_for_backward(a)
        ctx.min_magnitude = math.exp(floor)
        return log_mag, phase

    @staticmethod
    def backward(ctx, grad_log_mag: Tensor, grad_phase: Tensor) -> tuple[Tensor | None, None]:  # type: ignore[override]
        (a,) = ctx.saved_tensors
        alive = a.abs() >= ctx.min_magnitude
        # why the where: below the floor the forward used a constant, so no gradient flows there;
        # dividing first would give 0/0
        safe_a = torch.where(alive, a, torch.ones_like(a))
        if a.is_complex():
            grad_log = torch.complex(grad_log_mag, grad_phase)
            grad_a = grad_log / safe_a.conj()
        else:
            grad_a = grad_log_mag / safe_a
        return torch.where(alive, grad_a, torch.zeros_like(grad_a)), None


@dataclass(frozen=True)
class Transitions:
    """The state transitions, given either directly (``a``) or as a complex logarithm (``log_a``).

    Exactly one field is set; both have shape ``(B, L, H, dk)`` or ``(B, L, H, 1)`` (or the same
    without ``L`` for a single step) and are real or complex in the compute precision.
    """

    a: Tensor | None = None
    log_a: Tensor | None = None

    def as_a(self) -> Tensor:
        """The transitions themselves; exact zeros stay exact (exp(-inf) = 0)."""
        if self.a is not None:
            return self.a
        assert self.log_a is not None
        return torch.exp(self.log_a)

    def as_log(self) -> tuple[Tensor, Tensor | None]:
        """``(log|a|, phase)``: the log-magnitude floored at ``log_floor``, and the phase (None if real)."""
        if self.a is not None:
            floor = log_floor(real_dtype_of(self.a.dtype))
            log_mag, phase = _LogOfTransition.apply(self.a, floor)
            if self.a.is_complex():
                return log_mag, phase
            negative = self.a < 0
            # a real negative gate is a rotation by pi; the phase is constant (no gradient)
            return log_mag, (phase.detach() if bool(negative.any()) else None)
        assert self.log_a is not None
        real = self.log_a.real if self.log_a.is_complex() else self.log_a
        floor = log_floor(real.dtype)
        # why the clamp: -inf (a == 0) would make G_n - G_m NaN; below the floor the gate is a
        # hard reset and clamp() passes no gradient there (the true gradient a * dL/da is ~0)
        log_mag = real.clamp_min(floor)
        phase = self.log_a.imag if self.log_a.is_complex() else None
        return log_mag, phase


@dataclass(frozen=True)
class OpInputs:
    """Validated inputs in the compute precision (float32 or float64, complex counterparts)."""

    q: Tensor
    k: Tensor
    v: Tensor
    transitions: Transitions
    initial_state: Tensor | None
    scale: float
    out_dtype: torch.dtype
    compute_dtype: torch.dtype


def _compute_dtype(q: Tensor) -> torch.dtype:
    real = real_dtype_of(q.dtype)
    # why: float16/bfloat16 cumulative products and sums lose all precision within a few
    # hundred steps; the recurrence always runs in float32 at least
    return torch.float32 if real in _HALF else real


def _check_precision(name: str, t: Tensor, compute: torch.dtype) -> None:
    real = real_dtype_of(t.dtype)
    if real == torch.float64 and compute != torch.float64:
        raise TypeError(
            f"{name} has dtype {t.dtype} but q, k, v compute in {compute}; casting it down would "
            f"silently lose precision. Pass q, k, v in float64 too, or {name} in {compute}."
        )


def _check_qkv(q: object, k: object, v: object, lead: str) -> tuple[Tensor, Tensor, Tensor, torch.dtype]:
    """Types, ranks, shapes, devices and precisions of q, k, v; ``lead`` is "B, L, H" or "B, H".

    Returns the tensors and the compute dtype.
    """
    q, k, v = check_tensor("q", q), check_tensor("k", k), check_tensor("v", v)
    ndim = lead.count(",") + 2
    what = "one token, " if ndim == 3 else ""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim != ndim:
            dims = "dv" if name == "v" else "dk"
            expected = f"[{lead}, {dims}] ({what}{ndim} dims)"
            raise ValueError(f"{name} must have shape {expected}, got {_describe(t)}")
    _check_float_or_complex("q", q, allow_complex=True)
    _check_float_or_complex("k", k, allow_complex=True)
    _check_float_or_complex("v", v, allow_complex=False)
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)} = [{lead}, dk], got {_describe(k)}")
    if v.shape[:-1] != q.shape[:-1]:
        raise ValueError(
            f"v must have shape [{lead}, dv] with {lead} = {tuple(q.shape[:-1])} as in q, got {_describe(v)}"
        )
    _check_devices({"q": q, "k": k, "v": v})
    for name, t in (("k", k), ("v", v)):
        if real_dtype_of(t.dtype) != real_dtype_of(q.dtype):
            raise TypeError(
                f"{name} has dtype {t.dtype} but q has {q.dtype}; q, k and v must share one precision"
            )
    return q, k, v, _compute_dtype(q)


def validate_sequence_inputs(
    q: object,
    k: object,
    v: object,
    a: object,
    log_a: object,
    initial_state: object,
    scale: object,
    *,
    default_scale: float | None,
) -> OpInputs:
    """Check shapes/dtypes of a full-sequence call and cast to the compute precision."""
    q, k, v, compute = _check_qkv(q, k, v, "B, L, H")
    B, L, H, dk = q.shape
    if L < 1:
        raise ValueError(f"q has sequence length L = 0 (shape {tuple(q.shape)}); L must be >= 1")
    transitions = _validate_transitions(a, log_a, (B, L, H), dk, q.device, compute, "[B, L, H, dk]")
    state = _validate_state(initial_state, "initial_state", (B, H, dk, v.shape[-1]), q.device, compute)
    return OpInputs(
        q=_cast(q, compute),
        k=_cast(k, compute),
        v=v.to(compute),
        transitions=transitions,
        initial_state=state,
        scale=_validate_scale(scale, default_scale if default_scale is not None else 1.0),
        out_dtype=v.dtype,
        compute_dtype=compute,
    )


def validate_step_inputs(
    q: object, k: object, v: object, a: object, log_a: object, state: object, scale: object
) -> OpInputs:
    """Check shapes/dtypes of a single-token call (``[B, H, d]`` tensors)."""
    q, k, v, compute = _check_qkv(q, k, v, "B, H")
    B, H, dk = q.shape
    transitions = _validate_transitions(a, log_a, (B, H), dk, q.device, compute, "[B, H, dk]")
    checked_state = _validate_state(state, "state", (B, H, dk, v.shape[-1]), q.device, compute)
    return OpInputs(
        q=_cast(q, compute),
        k=_cast(k, compute),
        v=v.to(compute),
        transitions=transitions,
        initial_state=checked_state,
        scale=_validate_scale(scale, 1.0),
        out_dtype=v.dtype,
        compute_dtype=compute,
    )


def _cast(t: Tensor, compute: torch.dtype) -> Tensor:
    return t.to(complex_dtype_of(compute) if t.is_complex() else compute)


def _check_devices(tensors: dict[str, Tensor]) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all inputs must be on one device, got {listing}")


def _validate_transitions(
    a: object,
    log_a: object,
    lead: tuple[int, ...],
    dk: int,
    device: torch.device,
    compute: torch.dtype,
    layout: str,
) -> Transitions:
    if (a is None) == (log_a is None):
        given = "both" if a is not None else "neither"
        raise ValueError(f"pass exactly one of a= or log_a= (the transitions), got {given}")
    name, value = ("a", a) if a is not None else ("log_a", log_a)
    t = check_tensor(name, value)
    _check_float_or_complex(name, t, allow_complex=True)
    per_key = (*lead, dk)
    per_head = (*lead, 1)
    if tuple(t.shape) not in (per_key, per_head):
        raise ValueError(
            f"{name} must have shape {layout} = {per_key} (one transition per key dim) or "
            f"{per_head} (one per head, broadcast over dk), got {_describe(t)}"
        )
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but q is on {device}; move all inputs to one device")
    _check_precision(name, t, compute)
    t = _cast(t, compute)
    return Transitions(a=t) if name == "a" else Transitions(log_a=t)


def _validate_state(
    state: object, name: str, shape: tuple[int, ...], device: torch.device, compute: torch.dtype
) -> Tensor | None:
    if state is None:
        return None
    t = check_tensor(name, state)
    _check_float_or_complex(name, t, allow_complex=True)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape [B, H, dk, dv] = {shape}, got {_describe(t)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but q is on {device}; move all inputs to one device")
    _check_precision(name, t, compute)
    return t.to(complex_dtype_of(compute))


def _validate_scale(scale: object, default: float) -> float:
    if scale is None:
        return default
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__} {scale!r}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)
