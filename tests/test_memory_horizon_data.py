"""The Memory Horizon dataset (paper Appendix A)."""

from __future__ import annotations

import pytest
import torch

from gateloop.data.memory_horizon import compress_memory, make_memory_horizon, memory_span


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        ([], 0),  # empty list
        ([3], 3),  # middle element, added (first operation is +)
        ([2, 4], 8),  # + 2*4
        ([1, 2, 3], 1),  # + 1*3, then the middle 2 is subtracted: 3 - 2
        ([1, 2, 3, 4], 48),  # + 1*4 - 2*3 = -2, and -2 % 50 = 48 (non-negative modulo)
    ],
)
def test_compress_memory_hand_worked(memory: list[int], expected: int) -> None:
    assert compress_memory(memory, 50) == expected


def test_compress_memory_more_cases() -> None:
    # + 4*4 - 3*1 + 2*0 and the middle 1 is subtracted (third operation done, next is -)
    assert compress_memory([4, 3, 2, 1, 0, 1, 4], 50) == (16 - 3 + 0 - 1) % 50
    assert compress_memory([4, 4, 4, 4, 4, 4], 7) == (16 - 16 + 16) % 7
    assert compress_memory([0, 4, 0], 50) == (0 - 4) % 50 == 46
    with pytest.raises(ValueError, match="max_output must be >= 1"):
        compress_memory([1], 0)


def _brute_force_targets(x: torch.Tensor, reset_id: int, max_output: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    for s in range(x.shape[0]):
        memory: list[int] = []
        for t in range(x.shape[1]):
            token = int(x[s, t])
            memory = [] if token == reset_id else [*memory, token]
            out[s, t] = compress_memory(memory, max_output)
    return out


@pytest.mark.parametrize(("L", "resets"), [(1, 0), (2, 1), (50, 3), (300, 7)])
def test_targets_match_the_definition(L: int, resets: int) -> None:
    x, y = make_memory_horizon(12, seq_len=L, num_resets=resets, seed=L)
    assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (12, L)
    assert torch.equal(y, _brute_force_targets(x, 5, 50))


def test_resets_and_ranges() -> None:
    x, y = make_memory_horizon(200, seq_len=64, num_resets=3, seed=0)
    resets = x == 5
    assert (resets.sum(1) == 3).all()  # distinct positions
    assert not resets[:, 0].any()  # drawn from 1..L-1
    assert (y[resets] == 0).all()  # a reset's own target is the empty list's
    assert x[~resets].min() >= 0 and x[~resets].max() <= 4
    assert y.min() >= 0 and y.max() < 50


def test_deterministic_per_seed_and_seeds_differ() -> None:
    a = make_memory_horizon(8, seq_len=32, seed=3)
    b = make_memory_horizon(8, seq_len=32, seed=3)
    c = make_memory_horizon(8, seq_len=32, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_other_ranges() -> None:
    x, y = make_memory_horizon(20, seq_len=40, num_range=(1, 9), num_resets=2, max_output=13, seed=2)
    assert int(x.max()) == 10  # the reset id is num_range[1] + 1
    assert torch.equal(y, _brute_force_targets(x, 10, 13))


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="num_range must be"):
        make_memory_horizon(2, num_range=(4, 0))
    with pytest.raises(ValueError, match=r"num_resets must be in \[0, seq_len - 1\] = \[0, 9\]"):
        make_memory_horizon(2, seq_len=10, num_resets=10)
    with pytest.raises(ValueError, match="max_output must be >= 1"):
        make_memory_horizon(2, max_output=0)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        make_memory_horizon(0)


def test_memory_span() -> None:
    x = torch.tensor([[1, 2, 5, 3, 4, 5, 0]])
    assert memory_span(x, 5).tolist() == [[1, 2, 0, 1, 2, 0, 1]]
