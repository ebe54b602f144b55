"""pytest collection: the doctests of optional integrations run only when their extra is installed
(``pip install -e ".[dev,hf,eval]"`` installs them; a core install still collects cleanly)."""

from __future__ import annotations

import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec("transformers") is None:
    collect_ignore_glob.append("gateloop/hf/*")
