"""The release check: ``python -m build`` gives an sdist and a wheel of the gateloop-torch
distribution that ``twine check`` passes, with the C++ kernel source inside, and the wheel
installs into a fresh virtual environment where ``import gateloop`` is the installed copy
(version, CLI, one op call). Its dependencies (torch, ...) come from this environment's
site-packages, listed in a ``.pth`` file (whose own ``.pth`` files, our editable install's
among them, Python does not run): the check is of our package, not of PyPI's torch."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import torch

import gateloop

ROOT = Path(__file__).resolve().parents[1]

SMOKE = """
import sys, torch, gateloop
from pathlib import Path
assert Path(gateloop.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), gateloop.__file__
q, k, v = torch.randn(3, 1, 5, 2, 4)
y, _ = gateloop.gate_loop(q, k, v, log_a=torch.full((1, 5, 2, 4), -0.1))
assert y.shape == (1, 5, 2, 4)
print(gateloop.__version__)
"""


def _run(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


@pytest.mark.slow
def test_the_distribution_builds_checks_and_installs(tmp_path) -> None:
    dist = tmp_path / "dist"
    # --no-isolation: the build backend (setuptools) of this environment, no download
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    version = gateloop.__version__
    assert [w.name for w in wheels] == [f"gateloop_torch-{version}-py3-none-any.whl"]
    assert [s.name for s in sdists] == [f"gateloop_torch-{version}.tar.gz"]
    _run(sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists)
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "gateloop/ops/csrc/siso_scan.cpp" in names  # built on first use, as from a checkout
    assert not any(n.startswith(("tests/", "benchmarks/", "results/")) for n in names)

    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip()
    dependencies = Path(torch.__file__).resolve().parents[1]  # this environment's site-packages
    (Path(site) / "dependencies.pth").write_text(f"{dependencies}\n")
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheels[0])
    assert _run(python, "-c", SMOKE, cwd=tmp_path).stdout.split()[-1] == version
    cli = _run(env / "bin" / "gateloop", "--version", cwd=tmp_path).stdout
    assert cli.strip() == f"gateloop {version} (distribution gateloop-torch)"
