"""Reading and writing our files with errors that name them: one line a person can act on.

``read_json_object(path, what)``: a config, index or record file as a dict; a missing, torn,
non-UTF-8 or non-object file is one error naming the file and what it should have been.

``writing(path)``: around any write of ``path`` (a checkpoint, a shard, a record), a full disk or
quota becomes ``DiskFullError`` naming the path and the space left, whichever writer failed:
Python and safetensors report ENOSPC, but PyTorch's zip writer says only ``unexpected pos`` and
NumPy's ``tofile`` ``N requested and M written``, so for those short writes the file system's
free space decides.
"""

from __future__ import annotations

import errno
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# ENOSPC in the text of an error without errno (safetensors' Rust I/O error)
_NO_SPACE_MESSAGES = ("os error 28", "No space left on device", "Disk quota exceeded")
# what a short write says where the writer drops errno (torch's PyTorchFileWriter, numpy's tofile)
_SHORT_WRITE_MESSAGES = ("unexpected pos", "requested and")
_ALMOST_FULL_BYTES = 1 << 20  # below a MiB free, a short write is the disk being full


class DiskFullError(OSError):
    """No space (or quota) left while writing a named path."""


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; FileNotFoundError / ValueError naming the file and ``what``
    (e.g. "a model config") unless it is a readable, UTF-8, valid JSON object."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found ({what} expected)") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory; expected {what} (a JSON file)") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e}), so not {what}") from None
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is corrupt, not valid JSON ({e}); expected {what}") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds a JSON {type(saved).__name__}, not {what} (a JSON object)")
    return saved


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a full disk while writing ``path`` (a file or a directory being filled) into one
    ``DiskFullError`` naming it; every other error passes unchanged."""
    from safetensors import SafetensorError

    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError, SafetensorError) as e:
        if not _is_disk_full(e, Path(path)):
            raise
        raise disk_full_error(Path(path), e) from e


def disk_full_error(path: Path, cause: BaseException) -> DiskFullError:
    free = free_bytes(path)
    where = f"{free:,} bytes free there" if free is not None else "its file system unreadable"
    return DiskFullError(
        errno.ENOSPC,
        f"no space left on device while writing {path} ({where}; the writer said: {cause}). Free "
        "some space and run the command again (a training run continues from its last checkpoint with "
        "--resume)",
    )


def _is_disk_full(e: BaseException, path: Path) -> bool:
    if isinstance(e, OSError) and e.errno in _NO_SPACE_ERRNOS:
        return True
    if any(text in str(e) for text in _NO_SPACE_MESSAGES):
        return True
    if not any(text in str(e) for text in _SHORT_WRITE_MESSAGES):
        return False
    free = free_bytes(path)
    return free is not None and free < _ALMOST_FULL_BYTES


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system of ``path`` (its nearest existing ancestor); None if unknown."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def check_writable(path: Path, flag: str = "--out") -> None:
    """PermissionError / OSError naming ``path`` unless a file can be created beside it (in its
    directory): checked before hours of evaluation, not after. A real file is created and removed:
    permission bits alone do not show a read-only mount or root's rights."""
    directory = path.parent
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".gateloop-write-check-"):
            pass
    except OSError as e:
        raise type(e)(
            e.errno,
            f"cannot write {path} ({e.strerror or e}): give {flag} a writable path (or make {directory} "
            "writable)",
        ) from None
