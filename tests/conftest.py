"""Fixtures the test modules share."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateloop.data.prepare import prepare

SOTU = Path(__file__).parent / "data" / "sotu"  # a few State of the Union addresses (public domain)


@pytest.fixture(scope="module")
def byte_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SOTU texts as a byte-tokenised dataset (``gateloop data prepare --tokenizer bytes``),
    prepared once per test module."""
    out = tmp_path_factory.mktemp("data") / "sotu-bytes"
    prepare("text", out, path=SOTU, tokenizer_name="bytes", workers=1, progress=False)
    return out
