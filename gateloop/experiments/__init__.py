"""Experiments of the paper, built on the shared trainer: Memory Horizon (and, later, LM)."""
