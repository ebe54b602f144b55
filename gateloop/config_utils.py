"""Building experiment dataclass configs from JSON-style dicts (run directories, CLI overrides)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """``cls(**data)`` with unknown fields named in the error and JSON lists turned back into
    tuples; calls ``validate()`` when the class has one."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
    config = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    if hasattr(config, "validate"):
        config.validate()
    return config
