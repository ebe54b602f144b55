"""Packed variable-length batches: ``cu_seqlens`` checks, and the torch backend's handling of them.

FlashAttention convention: N sequences packed along L of a B = 1 batch, ``cu_seqlens`` = the
int32/int64 offsets [0, L_1, L_1 + L_2, ..., L] (N + 1 entries, strictly increasing). Each
sequence starts from its own initial state (zeros, or ``initial_state[i]``) and has its own
final state.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from gateloop._validation import check_tensor
from gateloop.ops._inputs import OpInputs, Transitions, _validate_state

RunFn = Callable[[OpInputs], tuple[Tensor, Tensor | None]]


def check_cu_seqlens(cu_seqlens: object, q: Tensor, *, ends_at_l: bool = True) -> Tensor:
    """``cu_seqlens`` for q (B, L, ...): int32/int64 [N+1] on q's device, 0 ... L, increasing.
    ``ends_at_l=False``: q is one slice of the packed sequence (context parallelism), so the last
    offset is the whole sequence's length, checked by the caller."""
    t = check_tensor("cu_seqlens", cu_seqlens, (torch.int32, torch.int64))
    B, L = q.shape[:2]
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(
            f"cu_seqlens must be a 1-D tensor [N+1] of sequence offsets, got shape {tuple(t.shape)}"
        )
    if t.device != q.device:
        raise ValueError(f"cu_seqlens is on {t.device} but q is on {q.device}; move all inputs to one device")
    if B != 1:
        raise ValueError(
            f"cu_seqlens packs sequences along L of a batch of one: q must have B = 1, got B = {B}"
        )
    offsets = t.tolist()
    if offsets[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {offsets[0]} (cu_seqlens = {offsets})")
    if any(b <= a for a, b in itertools.pairwise(offsets)):
        raise ValueError(f"cu_seqlens must be strictly increasing (no empty sequences), got {offsets}")
    if ends_at_l and offsets[-1] != L:
        raise ValueError(f"cu_seqlens must end at L = {L} (q's sequence length), got {offsets[-1]}")
    return t


def check_varlen_state(initial_state: object, inputs: OpInputs, n_seq: int) -> Tensor | None:
    """The per-sequence initial state (N, H, dk, dv), complex in the compute precision, or None."""
    _, _, H, dk = inputs.q.shape
    shape = (n_seq, H, dk, inputs.v.shape[-1])
    return _validate_state(initial_state, "initial_state", shape, inputs.q.device, inputs.compute_dtype)


def sequence_starts(cu_seqlens: Tensor, length: int) -> Tensor:
    """(L,) bool: True where a packed sequence starts (its state restarts there)."""
    starts = torch.zeros(length, dtype=torch.bool, device=cu_seqlens.device)  # (L,)
    starts[cu_seqlens[:-1].long()] = True
    return starts


def _with_resets(transitions: Transitions, starts: Tensor) -> Transitions:
    """a = 0 (log|a| = -inf) at every sequence start: the state restarts there. starts: (L,) bool."""
    mask = starts[None, :, None, None]  # (1, L, 1, 1)
    if transitions.a is not None:
        return Transitions(a=torch.where(mask, torch.zeros_like(transitions.a), transitions.a))
    log_a = transitions.log_a
    assert log_a is not None
    reset = torch.full((), float("-inf"), dtype=log_a.dtype, device=log_a.device)  # -inf (+0i): a = 0
    return Transitions(log_a=torch.where(mask, reset, log_a))


def run_torch_varlen(
    run: RunFn, inputs: OpInputs, cu_seqlens: Tensor, *, stateful: bool
) -> tuple[Tensor, Tensor | None]:
    """The torch backend over packed sequences.

    Without states (no initial state, no final state; ``stateful`` False) one call with resets at
    the sequence starts. Otherwise, and for the softmax mode, one call per sequence with its own
    initial state, returning the final states stacked (N, H, dk, dv).
    """
    offsets = cu_seqlens.tolist()
    if not stateful:
        starts = sequence_starts(cu_seqlens, inputs.q.shape[1])  # (L,)
        return run(replace(inputs, transitions=_with_resets(inputs.transitions, starts)))
    ys, finals = [], []
    for i, (s, e) in enumerate(itertools.pairwise(offsets)):
        tr = inputs.transitions
        part = Transitions(
            a=None if tr.a is None else tr.a[:, s:e], log_a=None if tr.log_a is None else tr.log_a[:, s:e]
        )
        h0 = None if inputs.initial_state is None else inputs.initial_state[i : i + 1]
        one = replace(
            inputs,
            q=inputs.q[:, s:e],
            k=inputs.k[:, s:e],
            v=inputs.v[:, s:e],
            transitions=part,
            initial_state=h0,
        )
        y, final = run(one)  # (1, e - s, H, dv), (1, H, dk, dv) | None
        ys.append(y)
        finals.append(final)
    final_states = None if finals[0] is None else torch.cat(finals, dim=0)  # (N, H, dk, dv)
    return torch.cat(ys, dim=1), final_states  # (1, L, H, dv)


def document_ids_from_cu_seqlens(cu_seqlens: Tensor, length: int) -> Tensor:
    """Sequence index per position, [1, L]: the ``document_ids`` form of ``cu_seqlens`` (for layers,
    such as softmax attention, that mask by document instead of restarting a state)."""
    positions = torch.arange(length, device=cu_seqlens.device)
    return torch.searchsorted(cu_seqlens[1:].to(torch.long), positions, right=True)[None]  # (1, L)
