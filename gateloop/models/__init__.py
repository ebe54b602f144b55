"""Blocks, the GateLoop LM / tagger, the Transformer baseline, generation and checkpoints."""

from gateloop.models.base import CausalModel
from gateloop.models.block import Block
from gateloop.models.config import GateLoopConfig, ModelConfig, TransformerConfig
from gateloop.models.gateloop_lm import GateLoopLM
from gateloop.models.generation import DecodingCache, generate, sample_next_token
from gateloop.models.pretrained import load_weights
from gateloop.models.transformer import TransformerLM

RecurrentCache = DecodingCache  # deprecated alias, kept for old imports: the cache also holds KV caches

__all__ = [
    "Block",
    "CausalModel",
    "DecodingCache",
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
