"""Crash-safe file operations for run directories.

A file or directory becomes visible under its final name only once its contents are on disk:
written under a temporary name, fsynced (the files, then the directory that holds them), then
renamed, which is atomic on POSIX file systems. A kill or power loss at any moment leaves either
the old version or the new one, never a torn one. Removal goes the other way: rename away first
(one atomic step that readers see), then delete; leftovers of an interrupted removal or write are
swept by ``sweep_leftovers`` when a run starts or resumes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

TMP_PREFIX = ".tmp_"
TRASH_PREFIX = ".trash_"


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory (its entries: the names renamed into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` all at once (temporary file, fsync, rename, fsync dir)."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def publish_dir(tmp: Path, final: Path) -> None:
    """Make the fully written directory ``tmp`` appear as ``final`` (replacing an old one)."""
    for child in tmp.rglob("*"):
        if child.is_file():
            fsync_path(child)
    fsync_path(tmp)
    if final.exists():
        remove_dir(final)
    tmp.rename(final)
    fsync_path(final.parent)


def remove_dir(path: Path) -> None:
    """Delete a directory so that no half-deleted copy is ever seen under its name."""
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}")
    if trash.exists():
        shutil.rmtree(trash)
    path.rename(trash)
    fsync_path(path.parent)
    shutil.rmtree(trash)


def sweep_leftovers(directory: Path) -> list[Path]:
    """Delete what interrupted writes and removals left in ``directory``; returns what went."""
    if not directory.is_dir():
        return []
    gone = []
    for child in directory.iterdir():
        if child.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
            gone.append(child)
    return gone
