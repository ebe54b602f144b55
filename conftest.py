"""pytest session setup, read before any test module is imported.

* Without a GPU the Triton-backend tests run under Triton's interpreter, and Triton reads
  ``TRITON_INTERPRET`` once, when it is first imported (into ``triton.knobs``); other tests import
  it earlier (``torch.compile`` loads it), so it is set here, for the whole session.
* The doctests of optional integrations run only when their extra is installed
  (``pip install -e ".[dev,hf,eval,cuda,onnx]"`` installs them; a core install still collects cleanly).
"""

from __future__ import annotations

import importlib.util
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

collect_ignore_glob = []
if importlib.util.find_spec("transformers") is None:
    collect_ignore_glob.append("gateloop/hf/*")
