"""Perplexity of a causal LM over a token split: non-overlapping or sliding windows."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate_perplexity(
    model: nn.Module,
    tokens: np.ndarray,
    *,
    seq_len: int,
    stride: int | None = None,
    max_tokens: int | None = None,
) -> dict[str, float]:
    """Perplexity = exp(mean NLL over the scored tokens).

    Non-overlapping windows of ``seq_len`` by default (every token scored once, with the context
    inside its window); with ``stride`` < seq_len, windows advance by ``stride`` and only their
    last ``stride`` tokens are scored (a sliding window: more context per token).
    """
    stride = stride or seq_len
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride must be in [1, seq_len = {seq_len}], got {stride}")
    n = len(tokens) if max_tokens is None else min(len(tokens), max_tokens + 1)
    if n < 2:
        raise ValueError(f"the split has {n} tokens; need at least 2 to score")
    device = next(model.parameters()).device
    model.eval()
    nll, count, scored_until = 0.0, 0, 0  # targets 1..scored_until are already scored
    for begin in range(0, n - 1, stride):
        end = min(begin + seq_len, n - 1)  # inputs tokens[begin:end], targets tokens[begin + 1:end + 1]
        window = torch.from_numpy(tokens[begin : end + 1].astype(np.int64)).to(device)[None]
        logits = model(window[:, :-1]).float()[0]  # (length, V)
        losses = F.cross_entropy(logits, window[0, 1:], reduction="none")[scored_until - begin :]
        nll += float(losses.sum())
        count += losses.numel()
        scored_until = end
        if end == n - 1:
            break
    mean = nll / count
    if not math.isfinite(mean):
        raise FloatingPointError(
            f"the mean NLL over {count:,} tokens is {mean}: the model gives non-finite logits (diverged "
            "or corrupt weights), so there is no perplexity to report"
        )
    return {"nll": mean, "perplexity": math.exp(mean), "tokens": count, "seq_len": seq_len, "stride": stride}
