"""The Memory Horizon dataset (paper Appendix A, Table 2).

Each sample is a sequence of numbers drawn uniformly from ``num_range`` with ``num_resets`` reset
tokens at random positions. The target at every position is ``compress_memory`` of the numbers
seen since the most recent reset (an alternating sum of products of pairs from both ends, modulo
``max_output``): to predict it, a model must remember everything back to the last reset and
forget everything before it.

Choices the paper leaves open, ours (also listed in the README):

* Input ids: the number ``n`` is id ``n`` and the reset token is id ``num_range[1] + 1`` (5 for
  the paper's range [0, 4]); the input vocabulary has ``num_range[1] + 2`` ids.
* Resets: ``num_resets`` distinct positions drawn uniformly from 1..L-1 per sample (never the
  first position, so every sample starts with a number).
* Target at position t: ``compress_memory`` of the numbers after the most recent reset at or
  before t (or since the start), up to and including t. A reset position's own target is 0 (the
  empty list).
* Numbers are i.i.d. uniform over the inclusive range; all randomness comes from one
  ``numpy.random.Generator(PCG64(seed))`` per call, so a seed fixes the dataset. The test set
  uses a different seed from the training set.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor


def compress_memory(memory: list[int], max_output: int) -> int:
    """The paper's target function, verbatim: pairs from both ends, alternating + and - (starting
    with +); an odd list's middle element is added or subtracted by the next operation; the result
    is taken modulo ``max_output`` (Python's non-negative modulo). An empty list gives 0."""
    if max_output < 1:
        raise ValueError(f"max_output must be >= 1, got {max_output}")
    result = 0
    start, end = 0, len(memory) - 1
    add = True
    while start < end:
        product = memory[start] * memory[end]
        result = result + product if add else result - product
        add = not add
        start += 1
        end -= 1
    if start == end:
        result = result + memory[start] if add else result - memory[start]
    return result % max_output


@lru_cache(maxsize=64)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs i < j of a length-n list, their sums i + j and signs (-1)^i (cached per n)."""
    i, j = np.triu_indices(n, k=1)
    return i, j, np.where(i % 2 == 0, 1, -1)


def _segment_targets(numbers: np.ndarray, max_output: int) -> np.ndarray:
    """compress_memory of every prefix of ``numbers`` at once, O(n²) vectorised.

    For a prefix of length p the pairs are (i, p-1-i) with i < p-1-i and sign (-1)^i, so summing
    (-1)^i m_i m_j over all i < j by i + j = p - 1 gives every prefix's pair sum in one bincount;
    an odd prefix adds (-1)^((p-1)/2) m_((p-1)/2).
    """
    n = len(numbers)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    m = numbers.astype(np.int64)
    i, j, sign = _pairs(n)
    pair_sums = np.bincount(i + j, weights=sign * m[i] * m[j], minlength=2 * n - 1)  # by i + j
    p = np.arange(1, n + 1)
    total = np.rint(pair_sums[p - 1]).astype(np.int64)  # float64 sums of ints below 2^53: exact
    odd = p % 2 == 1
    middle = (p - 1) // 2
    total[odd] += np.where(middle[odd] % 2 == 0, 1, -1) * m[middle[odd]]
    return np.mod(total, max_output)


def make_memory_horizon(
    num_samples: int,
    *,
    seq_len: int = 1024,
    num_range: tuple[int, int] = (0, 4),
    num_resets: int = 3,
    max_output: int = 50,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Generate ``(inputs, targets)``: LongTensors ``[num_samples, seq_len]``.

    Example:
        >>> x, y = make_memory_horizon(2, seq_len=16, seed=1)
        >>> x.shape, y.shape, int(x.max()) <= 5, int(y.max()) < 50
        (torch.Size([2, 16]), torch.Size([2, 16]), True, True)
    """
    low, high = num_range
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if low < 0 or high < low:
        raise ValueError(f"num_range must be (low, high) with 0 <= low <= high, got {num_range}")
    if not 0 <= num_resets <= seq_len - 1:
        raise ValueError(
            f"num_resets must be in [0, seq_len - 1] = [0, {seq_len - 1}] (distinct positions 1..L-1), "
            f"got {num_resets}"
        )
    if max_output < 1:
        raise ValueError(f"max_output must be >= 1, got {max_output}")
    reset_id = high + 1
    rng = np.random.Generator(np.random.PCG64(seed))
    inputs = rng.integers(low, high + 1, size=(num_samples, seq_len), dtype=np.int64)
    targets = np.zeros((num_samples, seq_len), dtype=np.int64)
    for s in range(num_samples):
        resets = np.sort(rng.choice(np.arange(1, seq_len), size=num_resets, replace=False))
        inputs[s, resets] = reset_id
        bounds = [0, *resets.tolist(), seq_len]
        # segment k covers [start, stop): the numbers after a reset (or from the start)
        for k in range(len(bounds) - 1):
            start = bounds[k] + (1 if k > 0 else 0)  # skip the reset token itself
            stop = bounds[k + 1]
            targets[s, start:stop] = _segment_targets(inputs[s, start:stop], max_output)
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def memory_span(inputs: Tensor, reset_id: int) -> Tensor:
    """Required memory span per position [N, L]: t - last reset at or before t, or t + 1 without one."""
    N, L = inputs.shape
    t = torch.arange(L, device=inputs.device).expand(N, L)
    last_reset = torch.where(inputs == reset_id, t, torch.full_like(t, -1))
    last_reset = torch.cummax(last_reset, dim=1).values  # (N, L): -1 before the first reset
    return t - last_reset
