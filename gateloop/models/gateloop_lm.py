"""The GateLoop language model (paper App. C): embedding, GateLoop blocks, norm, head."""

from __future__ import annotations

from typing import ClassVar

import torch

from gateloop.layers.gate_loop_layer import GateLoop
from gateloop.models.base import Block, CausalModel
from gateloop.models.config import GateLoopConfig


class GateLoopLM(CausalModel):
    """``forward(input_ids, *, state=None, return_state=False) -> logits [B, L, V]``.

    The state is a list with one complex ``[B, H, dk, dv]`` tensor per layer: O(1) memory per
    sequence however long the context. With ``output_vocab_size`` set it is a per-position tagger
    (Memory Horizon: logits over 50 classes from 6 input ids).

    Example:
        >>> model = GateLoopLM(GateLoopConfig.tiny())
        >>> ids = torch.randint(0, 97, (2, 10))
        >>> model(ids).shape
        torch.Size([2, 10, 97])
        >>> model.generate(ids, 5, temperature=0).shape
        torch.Size([2, 15])
    """

    config_class: ClassVar[type[GateLoopConfig]] = GateLoopConfig  # type: ignore[assignment]
    config: GateLoopConfig

    def __init__(
        self,
        config: GateLoopConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        for _ in range(config.n_layer):
            mixing = GateLoop(config.d_model, **config.layer_kwargs(), device=device, dtype=dtype)
            self.blocks.append(Block(mixing, config, device=device, dtype=dtype))
        self._init_embeddings()
