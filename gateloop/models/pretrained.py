"""A model's checkpoint directory: ``config.json`` and ``model.safetensors`` (no pickle), written
by ``save_model`` and read back, checked against the model, by ``load_weights``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import Tensor

from gateloop.file_errors import read_json_object
from gateloop.models.config import ModelConfig
from gateloop.models.weight_file import read_weights, save_weights

if TYPE_CHECKING:
    from gateloop.models.base import CausalModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

M = TypeVar("M", bound="CausalModel")
C = TypeVar("C", bound=ModelConfig)


def save_model(model: CausalModel, directory: str | Path, weights: dict[str, Tensor] | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory``; returns it.
    ``weights``: the tensors to write instead of ``model.state_dict()`` (a sharded model's,
    gathered)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory / CONFIG_NAME)
    state = model.state_dict() if weights is None else weights
    tensors = {name: t.detach().contiguous().cpu() for name, t in state.items()}
    metadata = {"format": "pt", "model_type": model.config.model_type}
    save_weights(tensors, directory / WEIGHTS_NAME, metadata)  # the same bytes for the same weights
    return directory


def read_model_config(config_class: type[C], directory: str | Path) -> C:
    """The config a checkpoint directory holds (both files must be there)."""
    directory = Path(directory)
    check_checkpoint_files(directory)
    return config_class.from_dict(read_json_object(directory / CONFIG_NAME, "a model config"))


def check_checkpoint_files(directory: Path) -> None:
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory / name} not found: expected {CONFIG_NAME} and {WEIGHTS_NAME}"
            )


def load_weights(model: M, directory: str | Path) -> M:
    """Load ``directory/model.safetensors`` (from ``save_pretrained``) into the existing ``model``
    (``checked_weights``, then ``load_state_dict``). Returns ``model``."""
    model.load_state_dict(checked_weights(model, directory))
    return model


def check_same_config(model: CausalModel, directory: Path) -> None:
    """ValueError naming the fields unless ``directory/config.json`` equals ``model.config``
    (compared field by field; no second model is built)."""
    config = model.config
    saved = type(config).from_dict(read_json_object(directory / CONFIG_NAME, "a model config")).to_dict()
    current = config.to_dict()
    differing = [name for name in current if saved[name] != current[name]]
    if differing:
        listing = ", ".join(f"{name} (saved {saved[name]!r}, model {current[name]!r})" for name in differing)
        raise ValueError(f"{directory / CONFIG_NAME} does not match the model's config: {listing}")


def checked_weights(model: CausalModel, directory: str | Path) -> dict[str, Tensor]:
    """The tensors of ``directory/model.safetensors``, on ``model``'s device, checked against it.

    ``directory/config.json`` must equal ``model.config`` (``check_same_config``). A tensor
    missing, unexpected or of another shape than the model's (its full shape, for a sharded
    model) is named too.
    """
    directory = Path(directory)
    check_checkpoint_files(directory)
    check_same_config(model, directory)
    first = next(iter(model.state_dict().values()), None)
    device = first.device if first is not None and first.device.type != "meta" else torch.device("cpu")
    weights = read_weights(directory / WEIGHTS_NAME, device=str(device))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{directory / WEIGHTS_NAME} does not match {CONFIG_NAME}: "
            f"missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}"
        )
    for name in expected:  # model order: the first mismatching layer is reported
        tensor = weights[name]
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"tensor {name!r} in {WEIGHTS_NAME} has shape {tuple(tensor.shape)} but the config "
                f"gives {tuple(expected[name].shape)}"
            )
    return weights
