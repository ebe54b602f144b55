"""Pure tensor functions: the GateLoop operator in every mode (no parameters)."""

from gateloop.ops.gate_loop import MODES, gate_loop
from gateloop.ops.naive import gate_loop_naive
from gateloop.ops.step import gate_loop_step

__all__ = ["MODES", "gate_loop", "gate_loop_naive", "gate_loop_step"]
