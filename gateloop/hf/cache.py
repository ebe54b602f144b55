"""The decoding cache that Hugging Face ``generate`` carries between steps: our ``DecodingCache``
(one complex ``[B, H, dk, dv]`` state per GateLoop layer, a KV dict per attention layer) with the
few methods ``generate`` calls on a cache (beam reordering, batch expansion, the length)."""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import Tensor

from gateloop.models.generation import DecodingCache


class GateLoopCache(DecodingCache):
    """``DecodingCache`` for ``transformers.GenerationMixin``; updated in place by the model's forward.

    It is not a ``transformers.Cache`` (whose layer API is built around keys and values and changes
    between releases): ``generate`` only needs ``reorder_cache`` for beam search, and the model tells
    ``generate`` not to build a cache of its own.

    Example:
        >>> from gateloop.models import GateLoopConfig, GateLoopLM
        >>> model = GateLoopLM(GateLoopConfig.tiny())
        >>> _, states = model(torch.randint(0, 97, (2, 5)), return_state=True)
        >>> cache = GateLoopCache(states, num_tokens=5)
        >>> cache.reorder_cache(torch.tensor([1, 1]))
        >>> cache.get_seq_length(), torch.equal(cache.states[0][0], cache.states[0][1])
        (5, True)
    """

    # generate asks these before deciding to compile the forward or to roll the cache back
    is_compileable = False
    is_croppable = False

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions consumed per row (padding included)."""
        return self.num_tokens

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Beam search: row ``i`` becomes row ``beam_idx[i]``, on every layer (in place)."""
        self.states = self.reorder(beam_idx).states

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep the rows ``indices`` (in place)."""
        self.reorder_cache(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every row ``repeats`` times in place (row i -> rows i*repeats ... (i+1)*repeats - 1)."""
        rows = torch.arange(self.batch_size).repeat_interleave(repeats)
        self.reorder_cache(rows)


def _flatten(cache: GateLoopCache) -> tuple[list[Any], int]:
    return [cache.states], cache.num_tokens


def _unflatten(children: Any, num_tokens: int) -> GateLoopCache:
    return GateLoopCache(list(children[0]), num_tokens)


def _flatten_with_keys(cache: GateLoopCache) -> tuple[list[tuple[Any, Any]], int]:
    return [(pytree.GetAttrKey("states"), cache.states)], cache.num_tokens


# a pytree container (its states are the leaves, nested lists and KV dicts included): torch.export
# and torch.compile can then take and return the cache, as they do transformers' own caches
pytree.register_pytree_node(
    GateLoopCache,
    _flatten,
    _unflatten,
    serialized_type_name="gateloop.hf.cache.GateLoopCache",
    flatten_with_keys_fn=_flatten_with_keys,
)
