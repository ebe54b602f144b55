"""Decoding: sampling the next token from logits (greedy, temperature, top-k, nucleus), the
decoding cache (GateLoop states and attention KV caches), and the generation loop (prefill the
prompt once, then one cached step per new token)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from gateloop._validation import INTEGER_DTYPES, check_rows, check_tensor

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
class DecodingCache:
    """What decoding carries from one step to the next: every layer's state, of any kind (a
    GateLoop layer's recurrent state or an attention layer's KV cache), and how many positions
    they hold.

    ``states`` has one entry per layer, exactly what ``model(..., return_state=True)`` returns:
    a complex ``[B, H, dk, dv]`` tensor for a GateLoop layer (O(1) in the context length), a KV
    cache dict of batch-first tensors for an attention layer (growing with the context).
    ``num_tokens`` counts the positions consumed per row, padding included.

    Example:
        >>> from gateloop.models import GateLoopConfig, GateLoopLM
        >>> model = GateLoopLM(GateLoopConfig.tiny())
        >>> _, states = model(torch.randint(0, 97, (3, 5)), return_state=True)
        >>> cache = DecodingCache(states, num_tokens=5).reorder(torch.tensor([2, 2, 0]))
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

    def reorder(self, index: Tensor) -> DecodingCache:
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
        return DecodingCache([_select_rows(s, index) for s in self.states], self.num_tokens)


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


# why not every token: ``finished.all()`` reads a flag back to the host (a device sync); rows that
# finished keep emitting eos, so checking every few tokens only saves work, never changes the output
EOS_CHECK_EVERY = 16


def last_real_positions(attention_mask: Tensor | None, shape: tuple[int, int]) -> Tensor | None:
    """Index of each row's last real token (``attention_mask`` True) -> LongTensor [B]; None without a
    mask. Any padding pattern (left, right, both) is allowed; a row with no real token is an error
    naming the row. One host sync per call (the all-padding check)."""
    if attention_mask is None:
        return None
    mask = check_rows("attention_mask", attention_mask, shape, (torch.bool,))
    empty = ~mask.any(dim=1)  # (B,)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"attention_mask rows {rows} have no real token (all False): nothing to continue")
    L = shape[1]
    return L - 1 - mask.flip(1).to(torch.uint8).argmax(dim=1)  # (B,): argmax finds the first True


def _check_generate_args(model: CausalModel, max_new_tokens: object) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise TypeError(f"max_new_tokens must be a non-negative int, got {type(max_new_tokens).__name__}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens}")
    if model.config.head_vocab_size != model.config.vocab_size:
        raise ValueError("generate() needs an LM head over the input vocabulary (output_vocab_size is set)")


def prefill(
    model: CausalModel, input_ids: Tensor, attention_mask: Tensor | None = None
) -> tuple[Tensor, DecodingCache]:
    """Run the prompt once: (logits of the next token [B, V], the cache after the prompt).

    The next token follows each row's last real token (``attention_mask`` True), so right-padded
    rows continue from their own end: padding is the identity on a GateLoop state and is marked
    invalid in a KV cache. Only those B positions go through the head (never [B, L, V]).
    """
    model.check_input_ids(input_ids)  # once per call: sampled ids need no check
    last = last_real_positions(attention_mask, tuple(input_ids.shape))
    masks = {} if attention_mask is None else {"attention_mask": attention_mask}
    hidden, states = model.hidden_states(input_ids, return_state=True, check_ids=False, **masks)
    if last is None:
        final = hidden[:, -1]  # (B, d_model)
    else:
        final = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, d_model)
    return model.logits(final), DecodingCache(states, num_tokens=input_ids.shape[1])


def decode_step(model: CausalModel, tokens: Tensor, cache: DecodingCache) -> Tensor:
    """Feed one token per row ([B]) after ``cache`` (updated in place) -> next-token logits [B, V]."""
    hidden, states = model.hidden_states(
        tokens[:, None], state=cache.states, return_state=True, check_ids=False
    )  # (B, 1, d_model)
    cache.update(states, 1)
    return model.logits(hidden[:, -1])


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

    input_ids [B, L] -> [B, L + max_new_tokens]: the prompt as given, then the new tokens. With
    ``attention_mask`` (bool [B, L], False on padding) each row continues from its own last real
    token, whether it is padded on the left or the right; the new tokens of a right-padded row
    still start at column L. After ``eos_token_id`` a row keeps emitting it. The ids are checked
    once per call, not once per token.
    """
    _check_generate_args(model, max_new_tokens)
    logits, cache = prefill(model, input_ids, attention_mask)  # (B, V)
    B, L = input_ids.shape
    out = input_ids.new_full((B, L + max_new_tokens), eos_token_id if eos_token_id is not None else 0)
    out[:, :L] = input_ids
    finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    for i in range(max_new_tokens):
        next_token = sample_next_token(
            logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )  # (B,)
        if eos_token_id is not None:
            next_token = torch.where(finished, torch.full_like(next_token, eos_token_id), next_token)
            finished |= next_token == eos_token_id
        out[:, L + i] = next_token
        if i + 1 == max_new_tokens:
            break
        if eos_token_id is not None and (i + 1) % EOS_CHECK_EVERY == 0 and bool(finished.all()):
            break  # the rest of ``out`` already holds eos
        logits = decode_step(model, next_token, cache)
    return out
