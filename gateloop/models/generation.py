"""Decoding: sampling the next token from logits (greedy, temperature, top-k, nucleus), the
per-layer state cache, and the generation loop (prefill the prompt once, then one cached step per
new token)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from gateloop._validation import INTEGER_DTYPES, check_tensor

if TYPE_CHECKING:
    from gateloop.models.base import CausalModel


def sample_next_token(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """logits [B, V] -> token ids [B]. temperature 0 is greedy (argmax)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive int or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    # why float32: softmax over a 50k vocabulary in bf16 loses the tail
    scores = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]  # (B, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(sorted_scores, dim=-1)
        # drop a token when the tokens ranked before it already cover top_p (the top one stays)
        drop_sorted = torch.cumsum(probs, dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass
class RecurrentCache:
    """The per-layer states of a ``CausalModel`` while decoding, and how many positions they hold.

    ``states`` has one entry per layer, exactly what ``model(..., return_state=True)`` returns:
    a complex ``[B, H, dk, dv]`` tensor for a GateLoop layer (O(1) in the context length), a KV
    cache dict of batch-first tensors for an attention layer. ``num_tokens`` counts the positions
    consumed per row, padding included.

    Example:
        >>> from gateloop.models import GateLoopConfig, GateLoopLM
        >>> model = GateLoopLM(GateLoopConfig.tiny())
        >>> _, states = model(torch.randint(0, 97, (3, 5)), return_state=True)
        >>> cache = RecurrentCache(states, num_tokens=5).reorder(torch.tensor([2, 2, 0]))
        >>> cache.batch_size, cache.num_tokens
        (3, 5)
    """

    states: list[Any] = field(default_factory=list)
    num_tokens: int = 0

    def update(self, states: list[Any], num_new_tokens: int) -> None:
        """Replace the states by those after ``num_new_tokens`` more positions."""
        if self.states and len(states) != len(self.states):
            raise ValueError(f"the cache holds {len(self.states)} layers, got states for {len(states)}")
        self.states = list(states)
        self.num_tokens += num_new_tokens

    @property
    def batch_size(self) -> int:
        """Rows of the cached states (0 before the first update)."""
        for state in self.states:
            rows = _rows(state)
            if rows is not None:
                return rows
        return 0

    def reorder(self, index: Tensor) -> RecurrentCache:
        """A cache whose row ``i`` is this cache's row ``index[i]``, on every layer (beam search:
        rows may repeat or be dropped). ``index``: an integer tensor [B'] of row numbers."""
        index = check_tensor("index", index, INTEGER_DTYPES)
        if index.ndim != 1:
            raise ValueError(f"index must be a 1-d tensor of row numbers, got shape {tuple(index.shape)}")
        rows = self.batch_size
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= rows):
            raise ValueError(
                f"index must lie in [0, {rows}) (the cache's rows), got values in "
                f"[{int(index.min())}, {int(index.max())}]"
            )
        return RecurrentCache([_select_rows(s, index) for s in self.states], self.num_tokens)


def _select_rows(state: Any, index: Tensor) -> Any:
    """``index_select`` along dim 0 of every tensor in a layer state (tensor, dict, list or tuple)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.index_select(0, index.to(state.device))
    if isinstance(state, Mapping):
        return {key: _select_rows(value, index) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_select_rows(value, index) for value in state)
    raise TypeError(f"cannot reorder a layer state of type {type(state).__name__}")


def _rows(state: Any) -> int | None:
    """The batch size of a layer state: dim 0 of its first tensor (None when it holds none)."""
    if isinstance(state, Tensor):
        return state.shape[0]
    if isinstance(state, Mapping):
        state = list(state.values())
    if isinstance(state, (list, tuple)):
        for value in state:
            rows = _rows(value)
            if rows is not None:
                return rows
    return None


@torch.no_grad()
def generate(
    model: CausalModel,
    input_ids: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Prefill the prompt once, then one cached step per new token (greedy at temperature 0).

    input_ids [B, L] (left-padded rows with ``attention_mask`` False on the padding) ->
    [B, L + max_new_tokens]; after ``eos_token_id`` a row keeps emitting it.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise TypeError(f"max_new_tokens must be a non-negative int, got {type(max_new_tokens).__name__}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens}")
    if model.config.head_vocab_size != model.config.vocab_size:
        raise ValueError("generate() needs an LM head over the input vocabulary (output_vocab_size is set)")
    masks = {} if attention_mask is None else {"attention_mask": attention_mask}
    logits, states = model(input_ids, state=None, return_state=True, **masks)
    cache = RecurrentCache(states, num_tokens=input_ids.shape[1])
    tokens = [input_ids]
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for i in range(max_new_tokens):
        next_token = sample_next_token(
            logits[:, -1], temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )  # (B,)
        if eos_token_id is not None:
            next_token = torch.where(finished, torch.full_like(next_token, eos_token_id), next_token)
            finished |= next_token == eos_token_id
        tokens.append(next_token[:, None])
        if i + 1 == max_new_tokens or (eos_token_id is not None and bool(finished.all())):
            break
        logits, states = model(next_token[:, None], state=cache.states, return_state=True)
        cache.update(states, 1)
    out = torch.cat(tokens, dim=1)
    if out.shape[1] < input_ids.shape[1] + max_new_tokens:  # all rows hit eos early
        pad = torch.full(
            (out.shape[0], input_ids.shape[1] + max_new_tokens - out.shape[1]),
            eos_token_id if eos_token_id is not None else 0,
            dtype=out.dtype,
            device=out.device,
        )
        out = torch.cat([out, pad], dim=1)
    return out
