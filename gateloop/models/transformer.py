"""The Transformer baseline: the same harness with causal softmax attention (rotary positions)."""

from __future__ import annotations

from typing import ClassVar

import torch

from gateloop.layers.softmax_attention import CausalSelfAttention
from gateloop.models.base import CausalModel
from gateloop.models.block import Block
from gateloop.models.config import TransformerConfig


class TransformerLM(CausalModel):
    """Causal Transformer LM; its state is a per-layer KV cache (grows with the context).

    Example:
        >>> model = TransformerLM(TransformerConfig.tiny())
        >>> model(torch.randint(0, 97, (2, 10))).shape
        torch.Size([2, 10, 97])
    """

    config_class: ClassVar[type[TransformerConfig]] = TransformerConfig  # type: ignore[assignment]
    config: TransformerConfig

    def __init__(
        self,
        config: TransformerConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        for _ in range(config.n_layer):
            attention = CausalSelfAttention(
                config.d_model,
                config.n_head,
                rope_base=config.rope_base,
                dropout=config.dropout,
                bias=config.bias,
                device=device,
                dtype=dtype,
            )
            self.blocks.append(Block(attention, config, device=device, dtype=dtype))
        self._init_embeddings()
