"""Padding in the Hugging Face forward: the mask of the new positions, and right padding made
exact (a padding position outputs what its row's last real token output)."""

from __future__ import annotations

import torch
from torch import Tensor


def new_token_mask(attention_mask: Tensor | None, shape: torch.Size) -> dict[str, Tensor]:
    """{"attention_mask": bool [B, L]} for the L new positions (HF passes the mask over the whole
    sequence so far); {} without a mask."""
    if attention_mask is None:
        return {}
    if attention_mask.ndim != 2 or attention_mask.shape[0] != shape[0] or attention_mask.shape[1] < shape[1]:
        raise ValueError(
            f"attention_mask must have shape [B, L] or [B, cached + L] with B, L = {tuple(shape)}, got "
            f"{tuple(attention_mask.shape)}"
        )
    return {"attention_mask": attention_mask[:, -shape[1] :].bool()}


def pads_repeat_last_real(hidden: Tensor, valid: Tensor) -> Tensor:
    """hidden [B, L, d] with each padding position after a real token given that row's last real
    token's hidden state: padding is the identity on the state, so its output is the output so
    far. With right padding, generate reads the last position's logits: this makes them the last
    real token's, and each row continues from its own text (as our native ``generate`` does).
    Padding before any real token (left padding) is left as computed."""
    positions = torch.arange(valid.shape[1], device=valid.device).expand_as(valid)  # (B, L)
    last_real = torch.where(valid, positions, -1).cummax(dim=1).values  # (B, L): -1 before any
    source = torch.where(last_real >= 0, last_real, positions)  # (B, L)
    return hidden.gather(1, source[..., None].expand_as(hidden))  # (B, L, d)
