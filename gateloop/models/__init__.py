"""Blocks, the GateLoop LM / tagger, the Transformer baseline, generation and checkpoints."""

from gateloop.models.base import Block, CausalModel
from gateloop.models.config import GateLoopConfig, ModelConfig, TransformerConfig
from gateloop.models.gateloop_lm import GateLoopLM
from gateloop.models.generation import sample_next_token
from gateloop.models.transformer import TransformerLM

__all__ = [
    "Block",
    "CausalModel",
    "GateLoopConfig",
    "GateLoopLM",
    "ModelConfig",
    "TransformerConfig",
    "TransformerLM",
    "sample_next_token",
]
