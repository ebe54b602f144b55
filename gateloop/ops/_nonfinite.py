"""Non-finite inputs stay causal: a NaN or Inf at position t never changes anything before t.

The matmul-based modes multiply masked (future) entries by zero, and 0 · NaN = NaN; in the
backward, every zero cotangent of a later output meets the non-finite values there, and
cumulative sums, carried states and rotations then carry the NaN to earlier positions. So the
modes never see a non-finite input: ``causal_nonfinite`` wraps a mode so that

* inputs with no NaN/Inf (one sum per tensor, one host sync) go straight through, untouched;
* otherwise every non-finite element is *selected* away (``torch.where``: q, k, v -> 0, log a ->
  0, a -> 1), the mode runs on finite inputs, and every output that depends on a removed value
  gets NaN added back (every other output gets -0.0, which leaves any float bit-identical).

What depends on what (the recurrence, docs/numerics.md 'Notation'): q_t reaches y_t only; k_t
and a_t reach the state, hence every y_n (n >= t) and the final state; v_t[e] reaches column e
of the state, hence y_n[e] (n >= t) and column e of the final state, up to the next restart of
the state: a hard reset (a = 0 for every key of the head) or the start of a packed sequence
(``cu_seqlens``), after which nothing before it is in the state. Under ``torch.compile`` the
check (a data-dependent branch) is skipped and the selection always runs: it fuses into the
surrounding kernels. See docs/numerics.md, 'Non-finite inputs'.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor

from gateloop.ops._inputs import Transitions
from gateloop.ops.varlen import sequence_starts

ModeFn = TypeVar("ModeFn", bound=Callable[..., Any])


def _total(t: Tensor) -> Tensor:
    """Σ of every real number in t (both parts of a complex tensor): finite iff every element is,
    or (float overflow) a false alarm that only costs the slow path."""
    return (torch.view_as_real(t) if t.is_complex() else t).sum()


@torch.no_grad()
def inputs_finite(q: Tensor, k: Tensor, v: Tensor, transitions: Transitions) -> bool:
    """True when q, k, v and the transitions hold no NaN/Inf (log|a| = -inf, a = 0, is legal)."""
    totals = [_total(q), _total(k), _total(v)]
    if transitions.log_a is not None:
        log_a = transitions.log_a
        log_mag = log_a.real if log_a.is_complex() else log_a
        if log_a.is_complex():
            totals.append(log_a.imag.sum())
        # a sum with a -inf term is -inf unless a NaN or +inf is present (then NaN or +inf):
        # "< inf" accepts the hard resets and nothing else
        ok = torch.isfinite(torch.stack(totals)).all() & (log_mag.sum() < math.inf)
    else:
        assert transitions.a is not None
        totals.append(_total(transitions.a))
        ok = torch.isfinite(torch.stack(totals)).all()
    return bool(ok)


class SetAside(NamedTuple):
    """Finite inputs for a mode, and what to add to its outputs afterwards."""

    q: Tensor  # r|c(B L H dk), non-finite elements -> 0
    k: Tensor  # r|c(B L H dk), non-finite elements -> 0
    v: Tensor  # r(B L H dv), non-finite elements -> 0
    transitions: Transitions  # bad log a -> 0 (a = 1), bad a -> 1
    y_poison: Tensor  # r(B L H dv): NaN where y depends on a removed value, else -0.0
    state_poison: Tensor  # r(B|N H 1 dv): the same for both parts of each final state (every key row)


def _zero_bad(t: Tensor, ok: Tensor, fill: float = 0.0) -> Tensor:
    # why where, not t * ok: 0 · NaN = NaN; selection also passes no gradient to the removed values
    return torch.where(ok, t, torch.full((), fill, dtype=t.dtype, device=t.device))


def _clean_transitions(transitions: Transitions) -> tuple[Transitions, Tensor, Tensor]:
    """(the transitions with bad entries made the identity, a_ok, restarts).

    a_ok (B, L, H, dk|1): the entry is a legal transition; restarts (B, L, H): a = 0 for every
    key of the head, so the state after t holds nothing from before t."""
    if transitions.log_a is not None:
        log_a = transitions.log_a
        log_mag = log_a.real if log_a.is_complex() else log_a
        a_ok = ~(torch.isnan(log_mag) | (log_mag == math.inf))  # (B, L, H, d): -inf is a = 0, legal
        if log_a.is_complex():
            a_ok = a_ok & torch.isfinite(log_a.imag)
        restarts = ((log_mag == -math.inf) & a_ok).all(dim=-1)  # (B, L, H)
        return Transitions(log_a=_zero_bad(log_a, a_ok)), a_ok, restarts  # log a = 0: the identity
    assert transitions.a is not None
    a = transitions.a
    a_ok = torch.isfinite(a)  # (B, L, H, d)
    restarts = (a == 0).all(dim=-1)  # (B, L, H)
    return Transitions(a=_zero_bad(a, a_ok, fill=1.0)), a_ok, restarts  # a = 1: the identity step


def _reached_in_segment(bad: Tensor, restarts: Tensor) -> Tensor:
    """(B, L, H, e) bool: some bad[s] with s <= n and no restart in (s, n] (a restart at s itself
    still takes in s's own inputs). bad (B, L, H, e), restarts (B, L, H)."""
    count = torch.cumsum(bad, dim=1, dtype=torch.int32)  # (B, L, H, e): bad values in [0, n]
    # at a restart r the count before r (count[r] - bad[r]) is what its segment starts from; the
    # count is non-decreasing, so a running max carries the latest restart's value forward
    before = torch.where(restarts[..., None], count - bad.to(torch.int32), 0)  # (B, L, H, e)
    return count > torch.cummax(before, dim=1).values  # (B, L, H, e)


def set_aside(
    q: Tensor, k: Tensor, v: Tensor, transitions: Transitions, cu_seqlens: Tensor | None = None
) -> SetAside:
    """Select the non-finite inputs away and record which outputs they reach (module docstring).

    With ``cu_seqlens`` (packed sequences of a B = 1 batch) every sequence start restarts the
    state and the state poison is per sequence, (N, H, 1, dv)."""
    q_ok, k_ok, v_ok = torch.isfinite(q), torch.isfinite(k), torch.isfinite(v)  # (B, L, H, d) each
    clean, a_ok, restarts = _clean_transitions(transitions)
    if cu_seqlens is not None:
        restarts = restarts | sequence_starts(cu_seqlens, q.shape[1])[None, :, None]  # (1, L, H)
    # a bad key or transition at t enters the whole state: every output from t on
    into_state = ~(k_ok.all(dim=-1) & a_ok.all(dim=-1))  # (B, L, H)
    from_state = _reached_in_segment(into_state[..., None] | ~v_ok, restarts)  # (B, L, H, dv): v per column
    reached = from_state | ~q_ok.all(dim=-1, keepdim=True)  # (B, L, H, dv): a bad q_t reaches y_t only
    real = v.dtype
    nan = torch.full((), math.nan, dtype=real, device=v.device)
    # why -0.0: x + (-0.0) == x bit for bit for every float x (+0.0 would turn -0.0 into +0.0)
    keep = torch.full((), -0.0, dtype=real, device=v.device)
    y_poison = torch.where(reached, nan, keep)  # (B, L, H, dv)
    # (B|N, H, dv): each final state is the state after its sequence's last position
    last = from_state[:, -1] if cu_seqlens is None else from_state[0, cu_seqlens[1:].long() - 1]
    state_poison = torch.where(last[:, :, None, :], nan, keep)  # (B|N, H, 1, dv)
    return SetAside(
        q=_zero_bad(q, q_ok),
        k=_zero_bad(k, k_ok),
        v=_zero_bad(v, v_ok),
        transitions=clean,
        y_poison=y_poison,
        state_poison=state_poison,
    )


def _poison_state(final: Tensor, poison: Tensor) -> Tensor:
    """c(B H dk dv) final state plus r(B H 1 dv) poison in both parts.

    Part by part rather than ``final + complex(poison, poison)``: inductor lowers a complex add
    through a real view that fails on the broadcast key dim (torch 2.13).
    """
    return torch.complex(final.real + poison, final.imag + poison)


def run_causal(
    mode: Callable[..., Any],
    q: Tensor,
    k: Tensor,
    v: Tensor,
    transitions: Transitions,
    *,
    cu_seqlens: Tensor | None = None,
    **kwargs: Any,
) -> Any:
    """``mode(q, k, v, transitions, **kwargs)`` on finite inputs, non-finite ones set aside and
    their reach added back to the outputs (module docstring). ``cu_seqlens`` tells where packed
    sequences restart; it is passed on to the mode when given."""
    if not torch.compiler.is_compiling() and inputs_finite(q, k, v, transitions):
        return mode(q, k, v, transitions, **kwargs, **_packed(cu_seqlens))
    aside = set_aside(q, k, v, transitions, cu_seqlens)
    out = mode(aside.q, aside.k, aside.v, aside.transitions, **kwargs, **_packed(cu_seqlens))
    if isinstance(out, tuple):
        y, final = out
        return y + aside.y_poison, (None if final is None else _poison_state(final, aside.state_poison))
    return out + aside.y_poison


def _packed(cu_seqlens: Tensor | None) -> dict[str, Tensor]:
    return {} if cu_seqlens is None else {"cu_seqlens": cu_seqlens}


def causal_nonfinite(mode: ModeFn) -> ModeFn:
    """Wrap a mode ``(q, k, v, transitions, **kw) -> y | (y, final_state | None)`` (see module docstring)."""

    @functools.wraps(mode)
    def wrapper(q: Tensor, k: Tensor, v: Tensor, transitions: Transitions, **kwargs: Any) -> Any:
        return run_causal(mode, q, k, v, transitions, **kwargs)

    return wrapper  # type: ignore[return-value]
