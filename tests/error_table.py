"""The worst relative RMS error per test and quantity from a $GATELOOP_ERROR_LOG file, as Markdown.

GATELOOP_ERROR_LOG=/tmp/errors.jsonl python -m pytest -q tests/test_triton.py
python tests/error_table.py /tmp/errors.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def table(lines: list[str]) -> str:
    worst: dict[str, dict[str, float]] = defaultdict(dict)
    tolerance: dict[str, float] = {}
    for line in lines:
        row = json.loads(line)
        case = row["test"].split("::", 1)[-1]
        worst[case][row["quantity"]] = max(worst[case].get(row["quantity"], 0.0), row["error"])
        tolerance[case] = max(tolerance.get(case, 0.0), row["tolerance"])
    out = ["| case | worst y / state | worst gradient | (quantity) | tolerance |", "|---|---|---|---|---|"]
    for case, errors in worst.items():
        outputs = {q: e for q, e in errors.items() if not q.startswith("grad")}
        grads = {q: e for q, e in errors.items() if q.startswith("grad")}
        g_name = max(grads, key=grads.__getitem__) if grads else ""
        out.append(
            f"| {case} | {max(outputs.values(), default=0):.1e} | "
            f"{grads.get(g_name, 0):.1e} | {g_name} | {tolerance[case]:.0e} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]).read_text().splitlines()))
