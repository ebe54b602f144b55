"""Blocks, the GateLoop LM / tagger, the Transformer baseline, generation and checkpoints."""

from gateloop.models.base import Block, CausalModel, load_weights
from gateloop.models.config import GateLoopConfig, ModelConfig, TransformerConfig
from gateloop.models.gateloop_lm import GateLoopLM
from gateloop.models.generation import RecurrentCache, generate, sample_next_token
from gateloop.models.transformer import TransformerLM

__all__ = [
    "Block",
    "CausalModel",
    "GateLoopConfig",
    "GateLoopLM",
    "ModelConfig",
    "RecurrentCache",
    "TransformerConfig",
    "TransformerLM",
    "generate",
    "load_weights",
    "sample_next_token",
]
