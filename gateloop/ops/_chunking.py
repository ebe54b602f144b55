"""Helpers shared by the chunked forms (multi-head and SISO): the default chunk length, padding to
whole chunks and the safe-range threshold."""

from __future__ import annotations

import torch
from torch import Tensor

# Default chunk length c for both chunked forms (``gate_loop_chunk``, ``gate_loop_siso_chunked``).
# Measured with benchmarks/chunk_size.py (fwd+bwd, benchmarks/README.md): with gates near 1, c = 32,
# 64 and 128 are within ~20 % (M1: 614 / 495 / 421 ms); with gates that forget fast (trained
# data-controlled models) wider chunks leave the safe range and take the exact path: 554 / 1199 /
# 2773 ms. 32 has no such cliff; the SISO pure-PyTorch form is flat in c.
DEFAULT_CHUNK_SIZE = 32
# the SISO pure-PyTorch form: flat in c (S2 above), and at 64 its float32 gradients stay within the
# test tolerance on every test shape (at 32, two shapes' transition gradients reach 1.2-1.3e-4 > 1e-4)
DEFAULT_SISO_CHUNK_SIZE = 64

# Largest within-chunk log-decay range for which the factorised form
# (q ⊙ e^{G_n}) · (k ⊙ e^{-G_m}) is used. e^{-G_m} <= e^T must not overflow even after the
# key-dim sum (float32: e^60 ~ 1e26, headroom 1e12 below the float32 max); the relative error of
# the factorised product is at most ~ 2·T·eps (float32: 1.4e-5, float64: 2.2e-13). Chunks beyond
# it use exact pairwise decays instead (see docs/numerics.md, 'The safe range').
_SAFE_RANGE = {torch.float32: 60.0, torch.float64: 500.0}


def safe_range(dtype: torch.dtype) -> float:
    return _SAFE_RANGE[dtype]


def pad_time(t: Tensor, pad: int, dim: int = 1) -> Tensor:
    """Append ``pad`` zeros along ``dim``. Zero log-gates, keys and values are the identity step."""
    if pad == 0:
        return t
    shape = list(t.shape)
    shape[dim] = pad
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def to_chunks(t: Tensor, chunk: int) -> Tensor:
    """(B, L, H, d) -> (B, H, N, c, d) with L padded to N·c (pad = identity steps)."""
    B, L, H, d = t.shape
    n_chunks = -(-L // chunk)
    t = pad_time(t, n_chunks * chunk - L)
    return t.transpose(1, 2).reshape(B, H, n_chunks, chunk, d)


def from_chunks(t: Tensor, length: int) -> Tensor:
    """(B, H, N, c, d) -> (B, L, H, d), dropping the padding."""
    B, H, N, c, d = t.shape
    return t.reshape(B, H, N * c, d)[:, :, :length].transpose(1, 2)
