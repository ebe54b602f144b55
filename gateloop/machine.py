"""What machine a number was measured on: the CPU model, recorded beside benchmark tables and
ablation runs (results on another CPU model may differ in the last digits, then diverge)."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["cpu_name"]


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s "model name"; else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
