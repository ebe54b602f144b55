"""Real file systems that fail the way a user's do: a small one that fills up, a read-only one.

Both need mounts (root, Linux): elsewhere the tests that use them are skipped with the reason.
``chmod`` alone is no read-only directory for root, and no test can fill a real disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a real small or read-only file system")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()})")


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


@contextmanager
def small_filesystem(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB mounted at ``path`` (created), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path))
    try:
        yield path
    finally:
        _unmount(path)


def fill(filesystem: Path, leave_bytes: int) -> Path:
    """A filler file that leaves about ``leave_bytes`` free on ``filesystem``; delete it to free."""
    filler = filesystem / "filler"
    free = shutil.disk_usage(filesystem).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave_bytes, 0))
    return filler


@contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """``directory`` bind-mounted read-only onto itself (every write fails with EROFS, root's too)."""
    _mount("--bind", str(directory), str(directory))
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True, capture_output=True)
        yield directory
    finally:
        _unmount(directory)
