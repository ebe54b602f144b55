"""Just-in-time build of the compiled CPU kernels in ``ops/csrc`` (once per machine, then cached).

The kernels are built with ``torch.utils.cpp_extension.load`` on first use, into torch's extension
cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), and loaded from there by
later processes. Building needs a C++ compiler and ninja; when either is missing, or the build
fails, the callers fall back to the pure-PyTorch path (same results, slower) and one warning says
why. ``GATELOOP_NO_EXTENSION=1`` forces the fallback.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import sysconfig
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

_CSRC = Path(__file__).parent / "csrc"
_LOCK = threading.Lock()
_LOADED: dict[str, ModuleType | None] = {}
log = logging.getLogger(__name__)


def extension_disabled() -> bool:
    """True when ``GATELOOP_NO_EXTENSION`` asks for the pure-PyTorch fallback."""
    return os.environ.get("GATELOOP_NO_EXTENSION", "").strip() not in ("", "0")


def _arch_flags() -> tuple[str, list[str]]:
    """A tag for the build cache and the matching compiler flags.

    Explicit ISA flags rather than ``-march=native``: torch's extension cache is keyed by name
    only, so a home directory shared by different machines must not hand one CPU a binary built
    for another's instruction set. The tag goes into the name.
    """
    capability = torch.backends.cpu.get_cpu_capability()  # "DEFAULT", "AVX2", "AVX512", ...
    flags: list[str] = []
    if platform.machine() in ("x86_64", "AMD64") and capability in ("AVX2", "AVX512"):
        # CPU_CAPABILITY_AVX2 selects ATen's AVX2 Vectorized<T> (SLEEF exp/sin/cos from libtorch)
        flags = ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return f"{platform.machine()}_{capability}".lower(), flags


def _openmp_flags() -> list[str]:
    """``-fopenmp`` where torch itself runs on OpenMP (Linux wheels).

    at::parallel_for in a header-only build is serial unless the extension is compiled with
    OpenMP; the extension then links libgomp.so.1, which resolves to the copy torch has already
    loaded, so it shares torch's thread pool and torch.set_num_threads governs it.
    """
    if sys.platform.startswith("linux") and torch.backends.openmp.is_available():
        return ["-fopenmp"]
    return []


def load_extension(source: str) -> ModuleType | None:
    """The compiled module for ``csrc/<source>``, or None (fallback) if it cannot be built."""
    if extension_disabled():
        return None
    if source in _LOADED:  # no lock on the hot path (and none for torch.compile to trace)
        return _LOADED[source]
    with _LOCK:
        if source in _LOADED:
            return _LOADED[source]
        module = None
        try:
            module = _build(source)
        except Exception as error:  # any build/load failure means: use the fallback
            warnings.warn(
                f"gateloop: could not build the compiled CPU kernel {source} ({type(error).__name__}: "
                f"{str(error).strip().splitlines()[-1] if str(error).strip() else ''}); using the "
                "pure-PyTorch path (same results, slower). Set GATELOOP_NO_EXTENSION=1 to silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
        _LOADED[source] = module
        return module


def _build(source: str) -> ModuleType:
    from torch.utils import cpp_extension  # why lazy: importing it costs ~0.3 s

    path = _CSRC / source
    tag, arch = _arch_flags()
    openmp = _openmp_flags()
    # why -O3 and the ISA flags: the kernels are plain loops written for the auto-vectoriser;
    # no -ffast-math, so IEEE semantics (a == 0, inf) stay exact
    cflags = ["-O3", "-fopenmp-simd", *arch, *openmp]
    # the name changes with the source and every flag, so a cached build always matches both
    digest = hashlib.sha256(path.read_bytes() + " ".join([tag, *cflags]).encode()).hexdigest()[:12]
    name = f"gateloop_{path.stem}_{tag}_{digest}"
    # ninja from the `ninja` wheel lives beside this interpreter, which may not be on PATH
    scripts = sysconfig.get_path("scripts")
    path_env = os.environ.get("PATH", "")
    if scripts and scripts not in path_env.split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + path_env
    log.info("gateloop: loading (building once if needed) the CPU kernel %s", name)
    return cpp_extension.load(
        name=name,
        sources=[str(path)],
        extra_cflags=cflags,
        extra_ldflags=openmp,
        verbose=False,
    )


def extension_available(source: str) -> bool:
    """Whether ``csrc/<source>`` is built and loaded (building it on first use).

    Marked for torch.compile as a constant (what ``torch.compiler.assume_constant_result`` sets,
    without importing dynamo at import time): the tracer calls it once, eagerly, instead of tracing
    into the build and its lock, so a model whose first call is compiled still uses the kernel.
    """
    return load_extension(source) is not None


extension_available._dynamo_marked_constant = True  # type: ignore[attr-defined]
