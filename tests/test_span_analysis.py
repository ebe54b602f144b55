"""The Memory Horizon span analysis: spans counted as the evaluation counts them, ceilings exact."""

from __future__ import annotations

import pytest

from gateloop.experiments.memory_horizon import MemoryHorizonData
from gateloop.experiments.span_analysis import span_analysis, write_span_report


def test_ceilings_and_histogram(tmp_path) -> None:
    data = MemoryHorizonData(num_test=20, seq_len=64, num_resets=0, test_seed=3)
    result = span_analysis(data, spans=(8, 64))
    # no resets: position t needs t + 1 tokens, so exactly 8 of 64 positions are within span 8
    assert result["ceiling_by_span"][8] == pytest.approx(8 / 64 + (56 / 64) / 50)
    assert result["ceiling_by_span"][64] == pytest.approx(1.0)
    assert result["mean_span"] == pytest.approx(32.5)
    assert sum(b["fraction"] for b in result["histogram"]) == pytest.approx(1.0)
    with_resets = span_analysis(MemoryHorizonData(num_test=20, seq_len=64, test_seed=3), spans=(8, 64))
    assert with_resets["mean_span"] < result["mean_span"]  # resets shorten what must be remembered
    write_span_report([result, with_resets], tmp_path)
    assert (tmp_path / "span_analysis.png").stat().st_size > 0
    assert "| 64 | 32.5 |" in (tmp_path / "span_analysis.md").read_text()
