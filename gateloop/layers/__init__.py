"""nn.Modules that own parameters: the GateLoop time-mixing layer and the feed-forward network."""

from gateloop.layers.feed_forward import FeedForward
from gateloop.layers.gate_loop_layer import (
    TRANSITION_INITS,
    TRANSITION_TAG,
    GateLoop,
    is_transition_parameter,
)

__all__ = ["TRANSITION_INITS", "TRANSITION_TAG", "FeedForward", "GateLoop", "is_transition_parameter"]
