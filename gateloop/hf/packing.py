"""Packed sequences through the Hugging Face forward: every way transformers says "these rows hold
several documents" becomes our model's own packing, and any keyword we would not use is refused.

transformers' padding-free training (``DataCollatorWithFlattening``) concatenates documents into
one row and marks them by ``position_ids`` restarting at 0, plus, with
``return_flash_attn_kwargs=True``, FlashAttention's ``cu_seq_lens_q/k`` and ``max_length_q/k``.
A model that ignores these trains across document boundaries without a word (GateLoop's state
would carry from one document into the next); ours resets there, exactly as ``GateLoopLM``
does for ``cu_seqlens`` / ``document_ids``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gateloop._validation import INTEGER_DTYPES

# the loss keywords transformers' Trainer passes through the forward to ``loss_function``
LOSS_KEYWORDS = frozenset({"num_items_in_batch", "ignore_index", "shift_labels"})
PACKING_KEYWORDS = frozenset(
    {
        "cu_seqlens",
        "document_ids",
        "position_ids",
        "cu_seq_lens_q",
        "cu_seq_lens_k",
        "max_length_q",
        "max_length_k",
    }
)


def packing_masks(kwargs: dict[str, Any], shape: torch.Size, device: torch.device) -> dict[str, Tensor]:
    """Pop the packing keywords from ``kwargs``; return ``{"cu_seqlens": ...}``,
    ``{"document_ids": ...}`` or ``{}`` for our model's forward.

    ``cu_seqlens`` and ``document_ids`` pass through. ``cu_seq_lens_q`` is ``cu_seqlens`` (``_k``
    must equal it: GateLoop has no separate keys). ``position_ids`` [B, L] mark a new document
    wherever they restart at 0; positions that only count up (what ``generate`` or an unpacked
    batch sends) carry nothing beyond the order, and are accepted and unused. When two are given
    they must agree.
    """
    given = {name: kwargs.pop(name) for name in sorted(PACKING_KEYWORDS) if kwargs.get(name) is not None}
    for name in ("max_length_q", "max_length_k"):  # FlashAttention's buffer sizes: nothing to mark
        given.pop(name, None)
    cu_seqlens = _cu_seqlens(given)
    document_ids = given.get("document_ids")
    from_positions = _documents_from_positions(given.get("position_ids"), shape)
    if cu_seqlens is not None and document_ids is not None:
        raise ValueError(
            "pass cu_seqlens (or cu_seq_lens_q) or document_ids, not both: each marks the documents"
        )
    if from_positions is not None:
        marked = document_ids if document_ids is not None else _documents_from_cu(cu_seqlens, shape, device)
        if marked is not None and not torch.equal(_starts(marked), _starts(from_positions)):
            raise ValueError(
                "position_ids restart at 0 in other places than "
                f"{'document_ids' if document_ids is not None else 'cu_seq_lens_q / cu_seqlens'} start a "
                "document: they must mark the same documents"
            )
        if marked is None:
            return {"document_ids": from_positions}
    if cu_seqlens is not None:
        return {"cu_seqlens": cu_seqlens}
    return {"document_ids": document_ids} if document_ids is not None else {}


def check_no_unused(kwargs: dict[str, Any], model_name: str) -> None:
    """TypeError naming every keyword the forward would otherwise ignore (HF models swallow them)."""
    unused = sorted(name for name, value in kwargs.items() if value is not None)
    if unused:
        raise TypeError(
            f"{model_name}.forward got keyword(s) it does not use: {', '.join(unused)}. Packing is "
            f"{', '.join(sorted(PACKING_KEYWORDS))}; padding is attention_mask"
        )


def _cu_seqlens(given: dict[str, Tensor]) -> Tensor | None:
    q, k, plain = given.get("cu_seq_lens_q"), given.get("cu_seq_lens_k"), given.get("cu_seqlens")
    if k is not None and (q is None or not torch.equal(k.to(q.device), q)):
        raise ValueError(
            "cu_seq_lens_k must equal cu_seq_lens_q: GateLoop mixes each document with itself only "
            f"(got q {None if q is None else q.tolist()}, k {k.tolist()})"
        )
    if q is not None and plain is not None and not torch.equal(q.to(plain.device), plain):
        raise ValueError(f"cu_seq_lens_q {q.tolist()} and cu_seqlens {plain.tolist()} differ")
    return plain if plain is not None else q


def _documents_from_positions(position_ids: Any, shape: torch.Size) -> Tensor | None:
    """document_ids [B, L] where the positions restart at 0 after the first token; None when
    they never do (nothing packed)."""
    if position_ids is None:
        return None
    if not isinstance(position_ids, Tensor) or position_ids.dtype not in INTEGER_DTYPES:
        raise TypeError(f"position_ids must be an integer tensor [B, L], got {_describe(position_ids)}")
    if position_ids.ndim == 1:
        position_ids = position_ids[None]  # (1, L): transformers allows one row for all
    if (
        position_ids.ndim != 2
        or position_ids.shape[-1] != shape[1]
        or position_ids.shape[0] not in (1, shape[0])
    ):
        raise ValueError(
            f"position_ids must have shape [B, L] = {tuple(shape)}, got {tuple(position_ids.shape)}"
        )
    restarts = position_ids == 0  # (B, L)
    restarts[:, 0] = True  # the first token starts a document whatever its position
    if not restarts[:, 1:].any():
        return None
    return torch.cumsum(restarts.long(), dim=1).expand(shape[0], -1)  # (B, L)


def _documents_from_cu(cu_seqlens: Tensor | None, shape: torch.Size, device: torch.device) -> Tensor | None:
    if cu_seqlens is None:
        return None
    from gateloop.ops.varlen import document_ids_from_cu_seqlens

    return document_ids_from_cu_seqlens(cu_seqlens.to(device), shape[1])  # (1, L)


def _starts(document_ids: Tensor) -> Tensor:
    """True where a new document begins (the first token always)."""
    change = torch.ones_like(document_ids, dtype=torch.bool)  # (B, L)
    change[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    return change


def _describe(value: Any) -> str:
    return f"a {value.dtype} tensor" if isinstance(value, Tensor) else type(value).__name__
