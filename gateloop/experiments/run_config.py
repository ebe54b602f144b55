"""A task's run config: the model config, a data config and the shared ``TrainConfig``, composed.

Each task subclasses ``RunConfig`` with its own ``task`` name and data config, and keeps its presets
as data (a dict of named run configs). Overrides address fields by dotted paths
(``"model.n_head"``, ``"train.lr"``), the same paths the CLI's flags are generated from.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from gateloop._validation import check_positive_int
from gateloop.config_utils import dataclass_from_dict, to_dict
from gateloop.models.config import ModelConfig, TransformerConfig
from gateloop.training.config import TrainConfig
from gateloop.training.run_dir import read_run_config

R = TypeVar("R", bound="RunConfig")
SECTIONS = ("model", "data", "train")
DERIVED_KEYS = ("task", "format", "resolved")  # what a saved config.json records beside the sections


@dataclass
class RunConfig:
    """``model`` + ``data`` + ``train``; subclasses narrow the types and add ``resolve``."""

    task: ClassVar[str] = "base"

    model: ModelConfig
    data: Any
    train: TrainConfig

    def validate(self) -> None:
        self.model.validate()
        if hasattr(self.data, "validate"):
            self.data.validate()
        self.train.validate()

    def to_dict(self) -> dict[str, Any]:
        """``{"task", "model", "data", "train"}``: one value per key, JSON-ready."""
        return {"task": self.task, **to_dict(self)}

    def to_saved_dict(self) -> dict[str, Any]:
        """``to_dict`` as a run directory's ``config.json`` records it (and a resumed run is compared
        against): subclasses make machine-dependent values, such as paths, absolute."""
        return self.to_dict()

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Inverse of ``to_dict``; also reads a run directory's ``config.json`` (extra top-level
        keys such as ``format`` and ``resolved`` are what the run derived, not what it asked for)."""
        if data.get("task") != cls.task:
            raise ValueError(f"this is a {data.get('task')!r} run config, not a {cls.task!r} one")
        unknown = sorted(set(data) - {*SECTIONS, *DERIVED_KEYS})
        if unknown:
            raise ValueError(
                f"unknown run-config section(s) {', '.join(map(repr, unknown))}: a run config has "
                f"{', '.join(SECTIONS)} (and {', '.join(DERIVED_KEYS)}, which a run directory adds)"
            )
        for section in SECTIONS:
            if not isinstance(data.get(section), dict):
                got = "nothing" if section not in data else f"a JSON {type(data[section]).__name__}"
                raise ValueError(f"run-config section {section!r} must be a JSON object, got {got}")
        return dataclass_from_dict(cls, {k: data[k] for k in SECTIONS})

    @classmethod
    def load(cls: type[R], run_dir: str | Path) -> R:
        """The run config a run directory's ``config.json`` records (refused with the file named
        when it is another task's run, or in an older format)."""
        saved = read_run_config(run_dir)
        if saved.get("task") != cls.task:
            raise ValueError(
                f"{Path(run_dir) / 'config.json'} is not a {cls.task!r} run (task {saved.get('task')!r})"
            )
        return cls.from_dict(saved)

    def with_overrides(self: R, overrides: dict[str, Any], *, skip_missing: bool = False) -> R:
        """A copy with ``{"section.field": value}`` applied and validated. A field the section's
        config does not have is an error naming it (or skipped, with ``skip_missing``)."""
        run = copy.deepcopy(self)
        changes: dict[str, dict[str, Any]] = {}
        for path, value in overrides.items():
            section, _, name = path.partition(".")
            if section not in SECTIONS or not name:
                raise ValueError(
                    f"override {path!r} must look like 'model.field', 'data.field' or 'train.field'"
                )
            target = getattr(run, section)
            if name not in field_names(type(target)):
                if skip_missing:
                    continue
                raise ValueError(
                    f"--{section}.{name.replace('_', '-')} does not apply to {type(target).__name__} "
                    f"(the {section} config of this run)"
                )
            changes.setdefault(section, {})[name] = value
        for section, fields in changes.items():
            setattr(run, section, dataclasses.replace(getattr(run, section), **fields))
        run.validate()
        return run


def field_names(config_class: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class)}


def heads_of(width: int, head_dim: int) -> int:
    """The head count whose head size is even, divides ``width`` and is closest to ``head_dim``
    (``width`` itself, i.e. heads of size 1, when no even split exists)."""
    check_positive_int("head_dim", head_dim)
    options = [h for h in range(1, width + 1) if width % h == 0 and (width // h) % 2 == 0] or [width]
    return min(options, key=lambda h: (abs(width // h - head_dim), h))


def transformer_like(base: ModelConfig, n_head: int) -> TransformerConfig:
    """A Transformer with ``base``'s shared fields (width, depth, FFN, norms, vocabulary)."""
    shared = {f.name: getattr(base, f.name) for f in dataclasses.fields(ModelConfig)}
    return TransformerConfig(**shared, n_head=n_head)
