"""Context parallelism by state passing (``gateloop.ops.context_parallel``): a sequence split
across 2 or 3 gloo ranks, unevenly and with a one-token slice, gives the single process's
outputs, final state and every gradient in float64 to 1e-12 (chunk, recurrent, scan; per-key and
per-head, complex and real transitions, a hard reset inside a slice, an initial state); the checks
that need no process group run here directly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gateloop.ops.context_parallel import gate_loop_context_parallel

WORKER = Path(__file__).parent / "cp_worker.py"


@pytest.mark.slow
@pytest.mark.parametrize("lengths", ["9,7", "5,9,2", "1,12"])
def test_context_parallel_equals_one_process(lengths: str) -> None:
    ranks = str(len(lengths.split(",")))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", ranks]
    done = subprocess.run(
        [*cmd, str(WORKER), "--lengths", lengths], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # 3 modes x (3 transition kinds + the layer)
    assert done.stdout.count("worst difference") == 12, done.stdout


def _inputs() -> dict[str, torch.Tensor]:
    q, k, v = torch.randn(3, 1, 4, 1, 2)
    return {"q": q, "k": k, "v": v, "log_a": torch.full((1, 4, 1, 2), -0.1)}


def test_without_a_process_group_the_error_says_what_is_missing() -> None:
    with pytest.raises(RuntimeError, match="needs an initialised process group"):
        gate_loop_context_parallel(**_inputs())


@pytest.mark.parametrize("mode", ["attention", "softmax"])
def test_modes_without_a_state_are_refused(mode: str) -> None:
    with pytest.raises(ValueError, match=r"mode must be one of 'chunk', 'recurrent', 'scan'; got"):
        gate_loop_context_parallel(**_inputs(), mode=mode)
