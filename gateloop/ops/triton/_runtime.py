"""Whether the GPU extra is installed and may run on a device, and loading its kernels lazily.

Nothing here imports Triton at module import: ``import gateloop`` stays light. The kernels (from
fla-core) are imported on the first Triton-backend call. Triton decides when a kernel module is
imported whether ``@triton.jit`` compiles for a GPU or runs under the CPU interpreter
(``TRITON_INTERPRET=1``), so that choice is recorded and checked against later calls.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from types import SimpleNamespace

import torch

INSTALL_HINT = "pip install -e '.[cuda]' (triton==3.7.1, fla-core==0.6.0, einops, packaging)"
_kernels: SimpleNamespace | None = None
_loaded_interpreted: bool | None = None


def extra_installed() -> bool:
    """True when triton and fla-core are importable (without importing them)."""
    return importlib.util.find_spec("triton") is not None and importlib.util.find_spec("fla") is not None


def interpreting() -> bool:
    """True when Triton kernels run under the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_runnable(device: torch.device, backend: str = "triton") -> None:
    """Raise a clear error unless the Triton backend can run on ``device`` in this process."""
    if not extra_installed():
        raise ImportError(f"backend={backend!r} needs the GPU extra, which is not installed: {INSTALL_HINT}")
    if device.type == "cuda":
        if _loaded_interpreted:
            raise RuntimeError(
                f"backend={backend!r} got CUDA tensors, but the Triton kernels were loaded under "
                "TRITON_INTERPRET=1 (CPU interpreter) in this process; run GPU work without it"
            )
        return
    if device.type != "cpu":
        raise ValueError(
            f"backend={backend!r} runs on CUDA tensors (or CPU under the interpreter), got {device}"
        )
    if not interpreting() or _loaded_interpreted is False:
        raise ValueError(
            f"backend={backend!r} got CPU tensors: Triton kernels need CUDA tensors, or the Triton "
            "interpreter, enabled by setting the environment variable TRITON_INTERPRET=1 before the "
            "first Triton call of the process (slow; for testing). Or use backend='torch'/'auto'."
        )


def prepare_interpreter() -> None:
    """Before any kernel module is imported: the interpreter patches when interpreting, and
    which of the two this process loads its kernels for (``check_runnable`` holds later calls to it)."""
    global _loaded_interpreted
    if _loaded_interpreted is not None:
        return
    interpreted = interpreting()
    if interpreted:
        from gateloop.ops.triton._interpreter import apply_interpreter_patches

        apply_interpreter_patches()
    _loaded_interpreted = interpreted


def kernels() -> SimpleNamespace:
    """fla's kernels, imported on first use (interpreter patches first when interpreting)."""
    global _kernels
    if _kernels is not None:
        return _kernels
    prepare_interpreter()
    with warnings.catch_warnings():
        # fla warns once that it found no GPU ("roll back to CPU"): expected under the interpreter
        warnings.filterwarnings("ignore", message="Triton is not supported on current platform")
        from fla.ops.gla import chunk_gla, fused_recurrent_gla
        from fla.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn
        from fla.ops.simple_gla import chunk_simple_gla
    _kernels = SimpleNamespace(
        chunk_gla=chunk_gla,
        fused_recurrent_gla=fused_recurrent_gla,
        chunk_simple_gla=chunk_simple_gla,
        chunk_hgrn=chunk_hgrn,
        fused_recurrent_hgrn=fused_recurrent_hgrn,
    )
    return _kernels
