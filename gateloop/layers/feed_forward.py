"""Channel mixing: the point-wise feed-forward network of every block (paper App. C)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gateloop._validation import check_choice

FFN_ACTIVATIONS = ("gelu", "relu", "silu")


class FeedForward(nn.Module):
    """x [..., d_model] -> Linear(d_model, d_hidden) -> activation -> Linear(d_hidden, d_model)."""

    def __init__(
        self,
        d_model: int,
        d_hidden: int,
        *,
        activation: str = "gelu",
        dropout: float = 0.0,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_choice("activation", activation, FFN_ACTIVATIONS)
        factory = {"device": device, "dtype": dtype}
        self.up = nn.Linear(d_model, d_hidden, bias=bias, **factory)
        self.down = nn.Linear(d_hidden, d_model, bias=bias, **factory)
        self.activation = activation
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = getattr(F, self.activation)(self.up(x))  # (..., d_hidden)
        return self.dropout(self.down(h))  # (..., d_model)
