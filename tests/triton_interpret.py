"""Where the Triton-backend tests run: CUDA when there is a GPU, else the CPU interpreter.

Import this before anything can import a Triton kernel (test_triton.py does so first): Triton
decides at a kernel module's import whether ``@triton.jit`` compiles for a GPU or interprets on
the CPU, from the environment variable ``TRITON_INTERPRET``. Without CUDA it is set to 1 here, and
the library applies its interpreter patches (``gateloop/ops/triton/_interpreter.py``, written for
triton 3.7.1, the version the ``cuda`` extra pins) when it first loads the kernels.
"""

from __future__ import annotations

import os
import sys

import torch

PINNED_TRITON = "3.7.1"
PINNED_FLA = "0.6.0"

if not torch.cuda.is_available():
    if any(name == "fla" or name.startswith("fla.") for name in sys.modules):
        raise RuntimeError("fla was imported before tests/triton_interpret.py could set TRITON_INTERPRET=1")
    os.environ["TRITON_INTERPRET"] = "1"

DEVICE = torch.device("cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda")
