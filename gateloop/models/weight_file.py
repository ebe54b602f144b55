"""``save_weights``: safetensors files that are the same bytes for the same tensors;
``read_weights`` / ``weight_shapes``: a torn or foreign file is one error naming it.

safetensors writes its ``__metadata__`` from a Rust hash map, whose order is random per map: two
saves of the same weights differ in raw bytes (a checksum comparison fails). The header is JSON
of a fixed length; sorting the metadata keys and writing the header back in place makes it
canonical without rewriting the tensor data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import Tensor

_LENGTH_BYTES = 8  # the header's length, little-endian u64, opens every safetensors file


def save_weights(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` with the metadata keys in sorted order."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    with open(path, "r+b") as f:
        length = int.from_bytes(f.read(_LENGTH_BYTES), "little")
        header = json.loads(f.read(length))  # tensors in safetensors' own (deterministic) order
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        # the same keys and values in another order: the same length; spaces pad as safetensors does
        if len(text) > length:
            raise AssertionError(f"{path}: the sorted safetensors header grew ({len(text)} > {length} bytes)")
        f.seek(_LENGTH_BYTES)
        f.write(text.ljust(length, b" "))


def read_weights(path: str | Path, device: str = "cpu") -> dict[str, Tensor]:
    """``safetensors.torch.load_file``; ValueError naming ``path`` for a torn or foreign file."""
    from safetensors.torch import load_file

    with _naming_corrupt(path):
        return load_file(str(path), device=device)


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, read from the header (no tensor loaded); ValueError naming ``path``
    for a torn or foreign file."""
    from safetensors import safe_open

    with _naming_corrupt(path), safe_open(str(path), framework="pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118


@contextmanager
def _naming_corrupt(path: str | Path) -> Iterator[None]:
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as e:  # a torn header, a foreign file, data shorter than the header says
        raise ValueError(f"{path} is corrupt or truncated, not a safetensors file ({e})") from None
