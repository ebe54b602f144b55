"""Padding and document boundaries as transitions: a padded step is the identity on the state
(a = 1, kᵀv = 0), a document start restarts it (a = 0)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gateloop._validation import INTEGER_DTYPES, check_rows
from gateloop.ops.context_parallel import slice_document_ids
from gateloop.ops.varlen import check_cu_seqlens


def apply_masks(
    log_mag: Tensor, arg: Tensor | None, k: Tensor, mask: Tensor | None, starts: Tensor | None
) -> tuple[Tensor, Tensor | None, Tensor]:
    """(log|a|, arg a, k) with padding (``mask`` False: a = 1 and kᵀv = 0, the identity on the
    state) and document starts (``starts`` True: a = 0, the state restarts) applied; masks [B, L],
    the rest (B, L, H, ·)."""
    if mask is not None:
        keep = mask[:, :, None, None]
        zero = torch.zeros((), dtype=log_mag.dtype, device=log_mag.device)
        log_mag = torch.where(keep, log_mag, zero)  # padding: a = 1 (|a| = 1 and phase 0) ...
        arg = None if arg is None else torch.where(keep, arg, zero)
        k = torch.where(keep, k, torch.zeros((), dtype=k.dtype, device=k.device))  # ... and kᵀv = 0
    if starts is not None:
        restart = torch.full((), -math.inf, dtype=log_mag.dtype, device=log_mag.device)
        log_mag = torch.where(starts[:, :, None, None], restart, log_mag)  # a = 0: restart
    return log_mag, arg, k


def document_starts(document_ids: object, shape: tuple[int, int]) -> Tensor:
    """Bool [B, L]: True at the first token of every document but a row's first (the state restarts).

    ``document_ids`` must be an integer tensor [B, L] (TypeError otherwise; ValueError for a shape).
    """
    ids = check_rows("document_ids", document_ids, shape, INTEGER_DTYPES)
    starts = torch.zeros_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    return starts


def packed_slice_documents(
    cu_seqlens: object, x: Tensor, state: Tensor | None, return_state: bool, group: Any
) -> Tensor:
    """One packed sequence (B = 1) split across the ranks of ``group``: the whole sequence's
    ``cu_seqlens`` as this slice's document ids [1, L_r]."""
    if state is not None or return_state:
        raise ValueError(
            "cu_seqlens with context_parallel takes one packed sequence without per-sequence states; "
            f"got state {'given' if state is not None else 'None'}, return_state={return_state}"
        )
    cu = check_cu_seqlens(cu_seqlens, x, ends_at_l=False)
    return slice_document_ids(cu, x.shape[1], group)
