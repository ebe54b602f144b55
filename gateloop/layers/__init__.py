"""nn.Modules that own parameters: the GateLoop time-mixing layer (``gate_loop_layer``, with its
options in ``gate_loop_options`` and its transition parametrisation in ``transitions``), the
Transformer baseline's causal softmax attention (``softmax_attention``) and the feed-forward
network (``feed_forward``)."""

from gateloop.layers.feed_forward import FeedForward
from gateloop.layers.gate_loop_layer import TRANSITION_TAG, GateLoop, is_transition_parameter
from gateloop.layers.gate_loop_options import TRANSITION_INITS, TRANSITION_PRESETS, GateLoopOptions
from gateloop.layers.softmax_attention import CausalSelfAttention

__all__ = [
    "TRANSITION_INITS",
    "TRANSITION_PRESETS",
    "TRANSITION_TAG",
    "CausalSelfAttention",
    "FeedForward",
    "GateLoop",
    "GateLoopOptions",
    "is_transition_parameter",
]
