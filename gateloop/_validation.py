"""Argument checks shared by ops, layers, models and configs.

One convention everywhere: an argument of the wrong *kind* (not a tensor, wrong dtype, a string
where an int belongs) is a ``TypeError``; a value of the right kind that is out of range or not
among the allowed choices is a ``ValueError``. Every message names the argument, what it got and
what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """``ValueError`` unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def check_tensor(name: str, value: object, dtypes: Iterable[torch.dtype] | None = None) -> Tensor:
    """``TypeError`` unless ``value`` is a tensor (of one of ``dtypes``, when given)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if value.dtype not in dtypes:
            expected = ", ".join(str(d) for d in dtypes)
            raise TypeError(f"{name} must have dtype {expected}; got {value.dtype}")
    return value


def check_rows(name: str, value: object, shape: tuple[int, int], dtypes: Iterable[torch.dtype]) -> Tensor:
    """A per-token tensor [B, L] (masks, document ids): ``TypeError`` for a non-tensor or another
    dtype, ``ValueError`` for another shape."""
    t = check_tensor(name, value, dtypes)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape [B, L] = {tuple(shape)}, got {tuple(t.shape)}")
    return t


def check_positive_int(name: str, value: object) -> int:
    """``TypeError`` for a non-int (bools included), ``ValueError`` for an int below 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
