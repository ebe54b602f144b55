"""Command-line flags generated from dataclass configs: one ``--section.field-name`` flag per field,
recursively through nested configs (``--model.n-head``, ``--data.seq-len``, ``--train.lr``).

Unset flags keep the preset's (or ``--config`` file's) value; the help of each flag lists its
value in every preset.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

DEST_PREFIX = "config:"


def value_parser(hint: Any):
    """A string -> value converter for a field's type hint (int, float, str, bool, tuples, Optional)."""
    args = typing.get_args(hint)
    is_union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    optional = is_union and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    origin = typing.get_origin(base)
    if origin is typing.Literal:  # a choice: the text itself, checked (and named) by validate()
        base = type(typing.get_args(base)[0])

    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        if origin is tuple:
            kinds = typing.get_args(base)
            parts = text.split(",")
            if len(parts) != len(kinds):
                raise argparse.ArgumentTypeError(
                    f"expected {len(kinds)} comma-separated values, got {text!r}"
                )
            return tuple(k(p) for k, p in zip(kinds, parts, strict=True))
        if base is bool:
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {base.__name__}, got {text!r}") from None

    parse.__name__ = getattr(base, "__name__", "value")  # argparse names the type in its errors
    return parse


def _config_classes(hint: Any) -> list[type]:
    """The dataclasses a field holds (several for a union such as GateLoopConfig | TransformerConfig)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return [o for o in options if dataclasses.is_dataclass(o)]


def add_config_flags(
    parser: argparse.ArgumentParser,
    config_class: type,
    presets: Mapping[str, Any],
    *,
    skip: frozenset[str] = frozenset(),
    aliases: Mapping[str, list[str]] | None = None,
) -> None:
    """Flags for every leaf field of ``config_class`` (a run config), one argument group per
    section; ``skip``: dotted paths the data or a dedicated flag decides; ``aliases``: extra
    spellings of a flag (``{"data.path": ["--data"]}``)."""
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        classes = _config_classes(hints[f.name])
        names = " / ".join(c.__name__ for c in classes)
        group = parser.add_argument_group(f"--{f.name}.* flags ({names} fields; unset: the preset's value)")
        seen: set[str] = set()
        for cls in classes:
            _add_leaf_flags(group, cls, f.name, presets, skip, aliases or {}, seen)


def _add_leaf_flags(
    group: Any,
    cls: type,
    prefix: str,
    presets: Mapping[str, Any],
    skip: frozenset[str],
    aliases: Mapping[str, list[str]],
    seen: set[str],
) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}"
        if path in skip or path in seen:
            continue
        seen.add(path)
        nested = _config_classes(hints[f.name])
        if nested:  # a config inside a config: its fields, one level deeper
            for inner in nested:
                _add_leaf_flags(group, inner, path, presets, skip, aliases, seen)
            continue
        group.add_argument(
            f"--{path.replace('_', '-')}",
            *aliases.get(path, []),
            dest=DEST_PREFIX + path,
            type=value_parser(hints[f.name]),
            # absent unless given: "none" is a value (``--train.grad-clip none`` turns clipping off)
            default=argparse.SUPPRESS,
            metavar=f.name.upper(),
            help=_choices(hints[f.name]) + _preset_values(presets, path),
        )


def _choices(hint: Any) -> str:
    """``"one of a, b, c; "`` for a Literal field (also inside Optional), else ``""``."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        if typing.get_origin(option) is typing.Literal:
            return f"one of {', '.join(map(str, typing.get_args(option)))}; "
    return ""


def _preset_values(presets: Mapping[str, Any], path: str) -> str:
    values = []
    for name, run in presets.items():
        value: Any = run
        for part in path.split("."):
            value = getattr(value, part, "—")
        values.append(f"{name}: {value}")
    return "presets: " + ", ".join(values)


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``{"section.field": value}`` for every config flag given on the command line (``None``
    included: an optional field set to ``none``)."""
    return {k[len(DEST_PREFIX) :]: v for k, v in vars(args).items() if k.startswith(DEST_PREFIX)}
