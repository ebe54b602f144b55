"""Causal softmax self-attention with rotary positions and a KV cache (the Transformer baseline)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gateloop._validation import INTEGER_DTYPES, check_positive_int, check_rows, check_tensor
from gateloop.ops.varlen import check_cu_seqlens, document_ids_from_cu_seqlens

KV_CACHE_KEYS = ("k", "v", "valid", "next_pos", "nonfinite")


def rotary(x: Tensor, positions: Tensor, base: float) -> Tensor:
    """Rotary position embedding (RoFormer), half-split layout. x [B, H, L, d], positions [B, L]."""
    d = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)  # (d/2,)
    angles = positions.to(torch.float32)[:, None, :, None] * inv_freq  # (B, 1, L, d/2)
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    """x [B, L, d_model] -> y [B, L, d_model] via ``scaled_dot_product_attention``.

    The cache (``state``) is a dict of batch-first tensors: ``k``, ``v`` [B, H, T, d] (rotated keys
    and values), ``valid`` bool [B, T] (which cached positions are real tokens), ``next_pos``
    [B] (the next position per row) and ``nonfinite`` bool [B, H] (a cached key or value was
    NaN/Inf; its stored copy is zeroed, and every later query is NaN, as in one full forward). A
    step costs O(cached length) and reads no tensor value on the host.
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        *,
        rope_base: float = 10000.0,
        dropout: float = 0.0,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("n_head", n_head)
        if d_model % n_head:
            raise ValueError(f"d_model = {d_model} is not divisible by n_head = {n_head}")
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.n_head, self.head_dim, self.rope_base, self.dropout = (
            n_head,
            d_model // n_head,
            rope_base,
            dropout,
        )
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias, **factory)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias, **factory)

    def forward(
        self,
        x: Tensor,
        *,
        state: dict[str, Tensor] | None = None,
        return_state: bool = False,
        attention_mask: Tensor | None = None,
        document_ids: Tensor | None = None,
        cu_seqlens: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """x [B, L, d_model] -> y (and the KV cache when asked). ``cu_seqlens`` (N sequences packed
        into a batch of one) becomes the equivalent ``document_ids``: attention stays inside each."""
        valid, document_ids = self._check_inputs(x, state, attention_mask, document_ids, cu_seqlens)
        B, L, D = x.shape
        q, k, v = (
            self.qkv(x).view(B, L, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        )  # 3 x (B, H, L, d)
        start = state["next_pos"] if state is not None else torch.zeros(B, dtype=torch.long, device=x.device)
        positions = _rotary_positions(valid, start, document_ids)  # (B, L)
        q, k = rotary(q, positions, self.rope_base), rotary(k, positions, self.rope_base)
        # (B, H, L) queries that see a NaN/Inf (None: none), and whether one was seen by the end (B, H)
        poisoned, nonfinite = _nonfinite_queries(q, k, v, None if state is None else state["nonfinite"])
        if poisoned is not None:
            # a non-finite key or value would reach earlier queries through 0 * inf in the weighted
            # sum: compute on finite inputs, then mark exactly the queries that see one
            q, k, v = (torch.where(torch.isfinite(t), t, torch.zeros((), dtype=t.dtype)) for t in (q, k, v))
        past = 0
        valid_keys = valid
        if state is not None:
            past = state["k"].shape[2]
            k = torch.cat([state["k"], k], dim=2)  # (B, H, T, d)
            v = torch.cat([state["v"], v], dim=2)
            valid_keys = torch.cat([state["valid"], valid], dim=1)  # (B, T)
        plain = attention_mask is None and document_ids is None and past == 0  # no host sync
        y = self._attend(q, k, v, past, None if plain else (valid_keys, document_ids))
        if poisoned is not None:
            y = torch.where(poisoned[..., None], torch.full((), float("nan"), dtype=y.dtype), y)
        y = self.out_proj(y.transpose(1, 2).reshape(B, L, D))
        if not return_state:
            return y
        new_state: dict[str, Any] = {
            "k": k,
            "v": v,
            "valid": valid_keys,
            "next_pos": start + valid.long().sum(dim=1),
            "nonfinite": nonfinite,
        }
        return y, new_state

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, past: int, masks: tuple[Tensor, Tensor | None] | None
    ) -> Tensor:
        """Causal SDPA of q (B, H, L, d) over k, v (B, H, T, d); ``masks`` = (valid keys (B, T),
        document ids (B, L) or None), or None for the plain causal case."""
        dropout = self.dropout if self.training else 0.0
        if masks is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        valid_keys, document_ids = masks
        L, T = q.shape[2], k.shape[2]
        qi = past + torch.arange(L, device=q.device)[:, None]  # absolute query index
        kj = torch.arange(T, device=q.device)[None, :]
        allowed = (kj <= qi)[None] & valid_keys[:, None, :]  # (B, L, T)
        if document_ids is not None:
            allowed = allowed & (document_ids[:, :, None] == document_ids[:, None, :])
        # a query always sees itself: a padded query with no visible key would be NaN
        allowed = allowed | (kj == qi)[None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], dropout_p=dropout)

    def _check_inputs(
        self,
        x: object,
        state: object,
        attention_mask: object,
        document_ids: object,
        cu_seqlens: object,
    ) -> tuple[Tensor, Tensor | None]:
        """(valid tokens bool (B, L), document ids (B, L) or None) after checking every argument:
        TypeError for a wrong kind, ValueError for a wrong shape or combination."""
        x = check_tensor("x", x)
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must have shape [B, L, d_model] with d_model = {self.d_model}, got {tuple(x.shape)}"
            )
        B, L, _ = x.shape
        if cu_seqlens is not None:
            if document_ids is not None:
                raise ValueError("cu_seqlens marks the sequences already: pass it without document_ids")
            document_ids = document_ids_from_cu_seqlens(check_cu_seqlens(cu_seqlens, x), L)
        valid = torch.ones(B, L, dtype=torch.bool, device=x.device)
        if attention_mask is not None:
            valid = check_rows("attention_mask", attention_mask, (B, L), (torch.bool,))
        if document_ids is not None:
            check_rows("document_ids", document_ids, (B, L), INTEGER_DTYPES)
        if state is not None:
            _check_kv_cache(state, B)
            if document_ids is not None:
                raise ValueError("document_ids (packed rows) cannot be combined with a KV cache")
        return valid, document_ids  # type: ignore[return-value]


def _rotary_positions(valid: Tensor, start: Tensor, document_ids: Tensor | None) -> Tensor:
    """Rotary position of every token (B, L): its index within its document, or, without
    documents, the count of real tokens before it after the cache's ``start`` (padding skipped)."""
    B, L = valid.shape
    if document_ids is not None:
        new_doc = torch.ones_like(document_ids, dtype=torch.bool)
        new_doc[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
        idx = torch.arange(L, device=valid.device).expand(B, L)
        doc_start = torch.cummax(torch.where(new_doc, idx, torch.zeros_like(idx)), dim=1).values
        return idx - doc_start  # (B, L): index within the document
    positions = start[:, None] + torch.cumsum(valid.long(), dim=1) - 1  # (B, L): real tokens only
    return positions.clamp_min(0)


def _nonfinite_queries(
    q: Tensor, k: Tensor, v: Tensor, carried: Tensor | None
) -> tuple[Tensor | None, Tensor]:
    """(Which queries (B, H, L) see a NaN/Inf, or None when none does; whether one was seen by the
    last token (B, H)). A query sees its own q, and every key/value at or before it: this call's
    (the causal mask hides later ones) and, through ``carried`` (B, H), the cache's.

    Without a cache one check (one host sync) skips the masks when everything is finite; with a
    cache (decoding) or under ``torch.compile`` the masks are always computed: no host sync per token.
    """
    B, H = q.shape[:2]
    may_skip = carried is None and not torch.compiler.is_compiling()
    if may_skip and bool(torch.isfinite(q).all() & torch.isfinite(k).all() & torch.isfinite(v).all()):
        return None, torch.zeros(B, H, dtype=torch.bool, device=q.device)
    bad_key = ~(torch.isfinite(k).all(-1) & torch.isfinite(v).all(-1))  # (B, H, L)
    seen = torch.cummax(bad_key.to(torch.uint8), dim=-1).values.bool()  # (B, H, L)
    if carried is not None:
        seen = seen | carried[..., None]  # (B, H, L)
    last = seen[..., -1] if seen.shape[-1] > 0 else torch.zeros(B, H, dtype=torch.bool, device=q.device)
    return seen | ~torch.isfinite(q).all(-1), last


def _check_kv_cache(state: object, batch: int) -> None:
    """A KV cache from a previous call: a dict of tensors (TypeError otherwise) with the cache keys
    and ``batch`` rows (ValueError otherwise)."""
    if not isinstance(state, Mapping):
        raise TypeError(
            f"state must be a KV cache dict with keys {KV_CACHE_KEYS}, got {type(state).__name__}"
        )
    missing = [key for key in KV_CACHE_KEYS if key not in state]
    if missing:
        raise ValueError(f"state is missing KV cache entries {missing}; expected keys {KV_CACHE_KEYS}")
    for key in KV_CACHE_KEYS:
        t = check_tensor(f"state[{key!r}]", state[key])
        if t.shape[0] != batch:
            raise ValueError(f"state[{key!r}] has {t.shape[0]} rows but x has B = {batch}")
