"""The random generators a checkpoint saves and a resumed run restores: torch's CPU generator,
every visible GPU's, Python's ``random`` (dropout, sampling and data shuffles draw from them)."""

from __future__ import annotations

import random
from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    """This process's generators (``cuda_rng`` None on machines without CUDA)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"torch_rng": torch.get_rng_state(), "cuda_rng": cuda, "python_rng": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    """The inverse of ``rng_state``, from a dict holding its keys (a trainer state, say)."""
    torch.set_rng_state(state["torch_rng"])
    random.setstate(_as_tuple(state["python_rng"]))
    _restore_cuda_rng(state.get("cuda_rng"))


def _restore_cuda_rng(states: list[torch.Tensor] | None) -> None:
    if states is None:
        return
    if not torch.cuda.is_available():
        # a GPU run continued on the CPU: nothing to restore, its CPU generator is restored above
        return
    if len(states) != torch.cuda.device_count():
        raise ValueError(
            f"the checkpoint holds CUDA RNG states of {len(states)} GPUs, this machine has "
            f"{torch.cuda.device_count()}: resume on the same number of visible GPUs"
        )
    torch.cuda.set_rng_state_all(states)


def _as_tuple(value: Any) -> Any:
    """random.setstate wants tuples; serialisation may turn them into lists."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value
