"""gateloop: GateLoop, the fully data-controlled linear recurrence (Katsch, arXiv 2311.01927)."""

from gateloop.ops import MODES, gate_loop, gate_loop_naive, gate_loop_step

__version__ = "0.1.0"

__all__ = ["MODES", "__version__", "gate_loop", "gate_loop_naive", "gate_loop_step"]
