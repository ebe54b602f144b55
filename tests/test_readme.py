"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, str(README), "exec"), namespace)


def test_layout_block_names_every_module() -> None:
    """The README's "Layout" block names every module and package of gateloop/: a file added,
    moved or renamed without the README fails here."""
    text = README.read_text()
    layout = text[text.index("## Layout") :]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    package = README.parent / "gateloop"
    missing = []
    for path in sorted(package.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py") or "__pycache__" in path.parts:
            continue
        if path.name not in layout:
            missing.append(str(path.relative_to(README.parent)))
    for folder in sorted(p for p in package.iterdir() if p.is_dir() and p.name != "__pycache__"):
        if f"{folder.name}/" not in layout:
            missing.append(f"{folder.relative_to(README.parent)}/")
    assert not missing, f"README.md's Layout block does not name: {', '.join(missing)}"
