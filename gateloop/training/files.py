"""Crash-safe file operations for run and dataset directories, and their one-writer lock.

A file or directory becomes visible under its final name only once its contents are on disk:
written under a temporary name, fsynced (the files, then the directory that holds them), then
renamed, which is atomic on POSIX file systems. A kill or power loss at any moment leaves either
the old version or the new one, never a torn one. Removal goes the other way: rename away first
(one atomic step that readers see), then delete; leftovers of an interrupted removal or write are
swept by ``sweep_leftovers`` when a run starts or resumes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import socket
import sys
from pathlib import Path

from gateloop.file_errors import writing

TMP_PREFIX = ".tmp_"
TRASH_PREFIX = ".trash_"
LOCK_NAME = ".lock"


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
    with writing(path), tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def publish_dir(tmp: Path, final: Path) -> None:
    """Make the fully written directory ``tmp`` appear as ``final``, replacing an old one.

    Where the file system can swap two names (Linux ``renameat2``), ``final`` is at every instant
    the complete old directory or the complete new one; elsewhere it is missing for the moment
    between two renames. The old directory is deleted afterwards under ``tmp``'s name (a
    ``TMP_PREFIX`` name, which ``sweep_leftovers`` clears if the deletion is interrupted).
    """
    for child in tmp.rglob("*"):
        if child.is_file():
            fsync_path(child)
    fsync_path(tmp)
    if not final.exists():
        tmp.rename(final)
    elif not exchange_paths(tmp, final):
        # rename the old one away first, delete it last: the gap without ``final`` is two renames
        # long, not as long as deleting a directory
        trash = final.with_name(f"{TRASH_PREFIX}{final.name}")
        if trash.exists():
            shutil.rmtree(trash)
        final.rename(trash)
        try:
            tmp.rename(final)
        except BaseException:
            trash.rename(final)  # the old one back under its name
            raise
        fsync_path(final.parent)
        shutil.rmtree(trash)
        return
    fsync_path(final.parent)
    if tmp.exists():  # after a swap ``tmp`` names the old directory
        shutil.rmtree(tmp)


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``);
    False, with nothing changed, where the C library or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc before 2.28: no wrapper
        return False
    at_fdcwd, rename_exchange = -100, 2  # <fcntl.h>, <linux/fs.h>
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # kernel or file system lacks it
        return False
    raise OSError(code, f"cannot swap {a} and {b}: {os.strerror(code)}")


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


class DirectoryLockedError(RuntimeError):
    """Another live process is writing this directory."""


class DirectoryLock:
    """An exclusive lock on a directory for one writer (``fcntl.flock`` on its ``.lock``).

    The kernel drops the lock when its process dies however it dies, so a stale lock from a killed
    writer never blocks a new one; the file records the holder's PID and host for the message a
    second writer gets. A holder may replace the whole directory (``publish_dir``) while holding
    the lock of the new one too: a writer that locked the old, replaced ``.lock`` tries again.
    Subclasses name the kind of directory and the error raised.
    """

    kind = "directory"
    error: type[DirectoryLockedError] = DirectoryLockedError

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> DirectoryLock:
        # each retry means the holder swapped the directory between our open and our flock; a
        # bound instead of a loop forever, in case something keeps replacing the file
        for _ in range(100):
            fd = self._lock_current_file()
            if fd is not None:
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
                self._fd = fd
                return self
        raise self.error(f"{self.path} keeps being replaced by another process; cannot lock it")

    def _lock_current_file(self) -> int | None:
        """A locked descriptor of the file now at ``self.path``; None when it was replaced."""
        import fcntl  # POSIX only: imported here so that this module imports everywhere

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise self.error(
                f"{self.path.parent} is being written by {holder}; wait for it to finish, stop it, or "
                f"choose another --out (one writer per {self.kind})"
            ) from None
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            now = None
        held = os.fstat(fd)
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)
        return None

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
