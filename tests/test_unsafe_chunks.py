"""The chunked mode's exact path for wide-decay chunks (ops/_unsafe_chunks.py): the sub-chunked
scores (pairwise decays within sub-chunks, factorised through a reference point between them)
equal the scores with every pairwise decay materialised, forward and both backwards, float64."""

from __future__ import annotations

import pytest
import torch

from gateloop.ops._pairwise_scores import (
    _full_pairwise_scores,
    pairwise_scores,
    pairwise_scores_backward,
    sub_chunk_size,
)


def test_sub_chunk_size() -> None:
    """16 where it divides the chunk; the largest divisor in 8..16 else; the whole chunk if none."""
    assert [sub_chunk_size(c) for c in (1, 13, 16, 64, 48, 40, 100, 127, 2 * 67)] == [
        1, 13, 16, 16, 16, 10, 10, 127, 134,
    ]  # fmt: skip


@pytest.mark.parametrize("c", [64, 48, 40, 13])
@pytest.mark.parametrize("per_head", [False, True], ids=["per_key", "per_head"])
@pytest.mark.parametrize("doubled", [True, False], ids=["doubled", "real"])
def test_sub_chunked_scores_equal_all_pairwise(c: int, per_head: bool, doubled: bool) -> None:
    g = torch.Generator().manual_seed(c + 2 * per_head + 4 * doubled)
    n, dk = 6, 3
    d, dk2 = (1 if per_head else dk), (2 * dk if doubled else dk)
    q2 = torch.randn(n, c, dk2, generator=g, dtype=torch.float64, requires_grad=True)
    k2 = torch.randn(n, c, dk2, generator=g, dtype=torch.float64, requires_grad=True)
    # log|a| from 0 (|a| = 1) to -60 (|a| ~ 1e-26), exact zeros and ones among them: ranges of
    # hundreds per chunk, far beyond any factorised form's safe range
    log_mag = -60 * torch.rand(n, c, d, generator=g, dtype=torch.float64) ** 4
    log_mag[:, ::7] = 0.0
    log_mag[0, c // 2] = -60.0
    log_mag[1, : min(c, 16)] = -40.0  # a sub-chunk beyond float64's safe range (500): pairwise
    log_mag.requires_grad_(True)
    weights = torch.randn(n, c, c, generator=g, dtype=torch.float64)

    want = _full_pairwise_scores(q2, k2, log_mag, doubled)
    got = pairwise_scores(q2, k2, log_mag, doubled)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(got.triu(1), torch.zeros_like(got))  # causal: nothing above the diagonal
    want_grads = torch.autograd.grad((want * weights).sum(), (q2, k2, log_mag))
    got_grads = torch.autograd.grad((got * weights).sum(), (q2, k2, log_mag))
    written_out = pairwise_scores_backward(weights, q2.detach(), k2.detach(), log_mag.detach(), doubled)
    for want_g, got_g, out_g in zip(want_grads, got_grads, written_out, strict=True):
        torch.testing.assert_close(got_g, want_g, rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(out_g, want_g, rtol=1e-11, atol=1e-11)


def test_sub_chunked_scores_in_float32_match_float64() -> None:
    """float32 inputs: decays from float64 cumulative sums, each factor <= 1, so no overflow and
    errors of a few float32 ulps of the scores' magnitude."""
    g = torch.Generator().manual_seed(0)
    n, c, dk = 4, 64, 4
    q2, k2 = (torch.randn(n, c, 2 * dk, generator=g, dtype=torch.float64) for _ in range(2))
    log_mag = -8 * torch.rand(n, c, dk, generator=g, dtype=torch.float64)  # chunk ranges ~250
    want = _full_pairwise_scores(q2, k2, log_mag, True)
    got = pairwise_scores(q2.float(), k2.float(), log_mag.float(), True)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6 * want.abs().max().item())
