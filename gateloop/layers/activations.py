"""Temporary re-export: this module is now ``gateloop.layers.transitions``.

Kept only while ``gateloop/models/config.py`` still imports the activation names from here;
delete it once that import reads ``from gateloop.layers.transitions import ...``.
"""

from gateloop.layers.transitions import MAGNITUDE_ACTIVATIONS, PHASE_ACTIVATIONS

__all__ = ["MAGNITUDE_ACTIVATIONS", "PHASE_ACTIVATIONS"]
