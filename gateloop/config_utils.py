"""Dataclass configs <-> JSON-style dicts, for every config of the library (models, runs, CLI).

One builder for all of them: unknown fields are named, JSON lists become tuples again, nested
dataclass fields are built recursively, and ``validate()`` runs when the class has one.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """``cls(**data)`` with nested dataclasses built from their dicts, lists turned back into
    tuples, unknown fields named in a ``ValueError``, and ``validate()`` called when defined."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} must be built from a dict, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    values = {name: _value_from_json(hints[name], value) for name, value in data.items()}
    config = cls(**values)
    if hasattr(config, "validate"):
        config.validate()
    return config


def _value_from_json(hint: Any, value: Any) -> Any:
    """A JSON value as the field's type wants it: tuples for lists, dataclasses for dicts."""
    if isinstance(value, dict):
        for option in _options(hint):
            if dataclasses.is_dataclass(option):
                from_dict = getattr(option, "from_dict", None)
                if from_dict is not None and _accepts(option, value):
                    return from_dict(value)
        raise ValueError(f"no config class in {hint} accepts {sorted(value)}")
    if isinstance(value, list):
        return tuple(value)
    return value


def _options(hint: Any) -> tuple[Any, ...]:
    """The members of a union hint (``A | B | None``), or the hint itself."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _accepts(cls: type, value: dict[str, Any]) -> bool:
    """Whether a dict is meant for ``cls``: its ``model_type`` tag, when both have one, agrees."""
    tag = getattr(cls, "model_type", None)
    return tag is None or value.get("model_type", tag) == tag


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON-ready values (nested configs via their own ``to_dict``)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = value.to_dict() if hasattr(value, "to_dict") else to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def check_field_types(config: Any) -> None:
    """``TypeError`` naming the field when a value does not have its declared type.

    Strict where JSON and hand edits go wrong: ``"false"`` is not a bool (it would be truthy),
    ``64.5`` and ``true`` are not ints; an int is accepted for a float. Nested configs check
    themselves in their own ``validate``.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            continue
        if not _matches(hints[f.name], value):
            raise TypeError(
                f"{type(config).__name__}.{f.name} must be {_describe_hint(hints[f.name])}, "
                f"got {value!r} ({type(value).__name__})"
            )


def _matches(hint: Any, value: Any) -> bool:
    if hint is Any:
        return True
    options = _options(hint)
    if len(options) > 1:
        return any(_matches(option, value) for option in options)
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is tuple:
        kinds = typing.get_args(hint)
        return (
            isinstance(value, tuple)
            and len(value) == len(kinds)
            and all(_matches(k, v) for k, v in zip(kinds, value, strict=True))
        )
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe_hint(hint: Any) -> str:
    options = _options(hint)
    if len(options) > 1:
        return " or ".join(_describe_hint(o) for o in options)
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) is tuple:
        return f"a tuple of ({', '.join(_describe_hint(k) for k in typing.get_args(hint))})"
    name = getattr(hint, "__name__", str(hint))
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
