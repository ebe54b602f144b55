"""The weight files of a Hugging Face model directory, read and checked before anything is
converted: one set of weights (a single file or an index with its shards, never both), every
shard resolved inside the directory (no absolute path, ``..`` or symlink leading out), the
index in step with the shards, and every tensor's name and shape equal to what the config builds
(the native model on the meta device), each failure one line naming the tensor and the file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gateloop.file_errors import read_json_object
from gateloop.models.config import ModelConfig
from gateloop.models.pretrained import WEIGHTS_NAME
from gateloop.models.registry import model_class
from gateloop.models.weight_file import weight_shapes

INDEX_NAME = f"{WEIGHTS_NAME}.index.json"  # a sharded save's {tensor: shard file} map


def hf_weight_files(directory: Path) -> tuple[list[Path], dict[str, str] | None]:
    """(weight files, the index's {tensor: shard} or None) of an HF directory: its
    model.safetensors, or the shards its index names, each resolved inside ``directory``.

    ValueError when it holds both: two sets of weights, and readers differ in which they take
    (transformers the single file), so neither can be the right one silently.
    """
    single, index = directory / WEIGHTS_NAME, directory / INDEX_NAME
    if index.is_file() and (single.exists() or single.is_symlink()):
        raise ValueError(
            f"{directory} holds two sets of weights, {single} and the shards of {index}; remove the "
            "stale one (a save_pretrained or conversion into a directory that held the other)"
        )
    if index.is_file():
        listed = weight_map(index)
        return [inside(directory, name, index) for name in sorted(set(listed.values()))], listed
    if not single.is_file():
        raise FileNotFoundError(f"{single} not found (nor a sharded index {INDEX_NAME})")
    return [inside(directory, WEIGHTS_NAME, directory)], None


def weight_map(index: Path) -> dict[str, str]:
    """The ``weight_map`` of a sharded save's index; ValueError naming the file unless it is a
    non-empty {tensor name: shard file name}."""
    saved = read_json_object(index, "a sharded weights index")
    weight_map = saved.get("weight_map") if isinstance(saved, dict) else None
    shards = list(weight_map.values()) if isinstance(weight_map, dict) else []
    bad = [shard for shard in shards if not isinstance(shard, str) or not shard]
    if not shards or bad:
        found = f"shard {bad[0]!r}" if bad else "no entries"
        raise ValueError(f"{index}'s weight_map has {found}; expected {{tensor name: shard file name}}")
    return weight_map


def inside(directory: Path, name: str, named_in: Path) -> Path:
    """``directory / name``, a file whose real path (symlinks followed) is inside ``directory``;
    ValueError for an absolute name, a ``..`` or a symlink leading out (a shard path must never
    reach a file elsewhere on the machine), FileNotFoundError for a missing file."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(
            f"{named_in} names shard {name!r}: expected a relative path inside {directory} (not absolute, "
            "no '..')"
        )
    path = directory / relative
    real, root = path.resolve(), directory.resolve()
    if not real.is_relative_to(root):
        raise ValueError(
            f"{path} leads through a symlink to {real}, outside {root}: expected the file inside the model "
            "directory (copy it in; huggingface_hub's snapshot_download(local_dir=...) writes real files)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found ({named_in} names it)")
    return path


# {tensor name: (file, shape)}, read from the files' headers (no tensor loaded)
TensorShapes = dict[str, tuple[Path, tuple[int, ...]]]


def tensor_shapes(files: Iterable[Path]) -> TensorShapes:
    """Every tensor's file and shape; ValueError for a tensor in two files (which one is the model's?)."""
    found: TensorShapes = {}
    for path in files:
        for name, shape in weight_shapes(path).items():
            if name in found:
                raise ValueError(f"tensor {name!r} is in both {found[name][0]} and {path}")
            found[name] = (path, shape)
    return found


def check_index(listed: dict[str, str], found: TensorShapes, directory: Path) -> None:
    """ValueError unless the index names, for each tensor, the shard that holds it (a reader that
    trusts the index would otherwise read another tensor, or miss one)."""
    index = directory / INDEX_NAME
    for name, (path, _) in found.items():
        if name not in listed:
            raise ValueError(f"tensor {name!r} in {path} is not in {index}'s weight_map")
        if directory / listed[name] != path:
            raise ValueError(f"{index} names {listed[name]} for tensor {name!r}, but {path.name} holds it")


def check_tensors(
    found: TensorShapes, config: ModelConfig, prefix: str, config_path: Path, where: Path
) -> None:
    """ValueError unless ``found`` holds exactly the tensors of the model ``config`` describes (names
    with ``prefix``), of its shapes; one line naming the tensor, both shapes and the file (``where``:
    the weights, or the index of a sharded set, for a missing tensor), then how many more differ."""
    # the model built on the meta device: every tensor's name and shape, no memory, no init
    expected = {
        prefix + name: tuple(t.shape)
        for name, t in model_class(config)(config, device="meta").state_dict().items()
    }
    problems = [  # model order: the first layer that differs is the one named
        f"tensor {name!r} in {found[name][0]} has shape {found[name][1]}, but {config_path} gives {shape}"
        for name, shape in expected.items()
        if name in found and found[name][1] != shape
    ]
    problems += [
        f"tensor {name!r} (shape {shape} in {config_path}) is missing from {where}"
        for name, shape in expected.items()
        if name not in found
    ]
    problems += [
        f"tensor {name!r} in {path} has shape {shape}, but {config_path} describes no such tensor"
        for name, (path, shape) in sorted(found.items())
        if name not in expected
    ]
    if problems:
        more = f" ({len(problems) - 1} more tensors differ)" if len(problems) > 1 else ""
        raise ValueError(problems[0] + more)
