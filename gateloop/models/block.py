"""The block every model of the harness stacks: time mixing and a feed-forward network."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gateloop.layers.feed_forward import FeedForward
from gateloop.models.config import ModelConfig


class Block(nn.Module):
    """Time mixing + channel mixing (FFN), each with a skip connection and a LayerNorm.

    pre-norm:  x = x + mix(norm1(x));  x = x + ffn(norm2(x))
    post-norm: x = norm1(x + mix(x));  x = norm2(x + ffn(x))
    """

    def __init__(
        self,
        time_mixing: nn.Module,
        config: ModelConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.pre_norm = config.norm_position == "pre"
        self.norm1 = nn.LayerNorm(config.d_model, **factory)
        self.time_mixing = time_mixing
        self.norm2 = nn.LayerNorm(config.d_model, **factory)
        self.channel_mixing = FeedForward(
            config.d_model,
            config.d_channel_mixing,
            activation=config.ffn_activation,
            dropout=config.dropout,
            **factory,
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, *, state: Any = None, return_state: bool = False, **masks: Any) -> Any:
        mixed = self.time_mixing(self.mixing_input(x), state=state, return_state=return_state, **masks)
        mixed, new_state = mixed if return_state else (mixed, None)
        x = self.after_mixing(x, mixed)
        return (x, new_state) if return_state else x

    def mixing_input(self, x: Tensor) -> Tensor:
        """What the time mixing sees: norm1(x) in a pre-norm block, x itself in a post-norm one."""
        return self.norm1(x) if self.pre_norm else x

    def after_mixing(self, x: Tensor, mixed: Tensor) -> Tensor:
        """The rest of the block once the time mixing gave ``mixed`` for input ``x`` (both [..., d_model]):
        the skip connection, the FFN and the norms. Steps that run the mixing their own way (the
        real-valued ONNX decode step) call ``mixing_input`` and this around it."""
        x = x + self.dropout(mixed)
        if not self.pre_norm:
            x = self.norm1(x)
        x = x + self.channel_mixing(self.norm2(x) if self.pre_norm else x)
        if not self.pre_norm:
            x = self.norm2(x)
        return x
