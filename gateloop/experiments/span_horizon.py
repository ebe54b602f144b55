"""How far back a Memory Horizon model remembers, read from its accuracy by required span.

``h90`` / ``h50``: the first span s at which the accuracy of the positions whose span lies in the
8-wide window centred on s (spans s-3 .. s+4, pooled by count) falls below 0.9 / 0.5; ``None``
when it never does within the spans the test set has. The window smooths the per-span noise of
spans with few positions; pooling by count weighs each position once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HORIZON_LEVELS = {"h90": 0.9, "h50": 0.5}
WINDOW = 8
# span -> {"accuracy", "count"}, as ``evaluate`` writes it (keys ints, or strings read from JSON)
SpanTable = Mapping[Any, Mapping[str, float]]


def windowed_accuracy(by_span: SpanTable, window: int = WINDOW) -> dict[int, float]:
    """Span -> pooled accuracy over the spans of the window centred on it."""
    spans = {int(s): (float(v["accuracy"]), int(v["count"])) for s, v in by_span.items()}
    before, after = (window - 1) // 2, window // 2  # 8: spans s-3 .. s+4
    result = {}
    for s in sorted(spans):
        inside = [spans[t] for t in range(s - before, s + after + 1) if t in spans]
        positions = sum(count for _, count in inside)
        result[s] = sum(acc * count for acc, count in inside) / positions
    return result


def memory_horizons(
    by_span: Mapping[Any, Mapping[str, float]], window: int = WINDOW
) -> dict[str, int | None]:
    """``{"h90": s, "h50": s}``: the first spans where the windowed accuracy falls below each level."""
    smooth = windowed_accuracy(by_span, window)
    return {
        name: next((s for s, acc in smooth.items() if acc < level), None)
        for name, level in HORIZON_LEVELS.items()
    }
