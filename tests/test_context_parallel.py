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
from tests.training_helpers import TOY_LM_MODEL

WORKER = Path(__file__).parent / "cp_worker.py"


@pytest.mark.slow
@pytest.mark.parametrize("lengths", ["5,9,2", "1,12"])  # 3 uneven ranks; 2 with a one-token slice
def test_context_parallel_equals_one_process(lengths: str) -> None:
    ranks = str(len(lengths.split(",")))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", ranks]
    done = subprocess.run(
        [*cmd, str(WORKER), "--lengths", lengths], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # 3 modes x (3 transition kinds + the layer + the layer with document_ids and with cu_seqlens)
    assert done.stdout.count("worst difference") == 18, done.stdout


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


# ---------------------------------------------------------------------------- in the trainer
LM_FLAGS = [
    *TOY_LM_MODEL,
    *("--data.seq-len", "32", "--data.eval-tokens", "400", "--train.batch-size", "4", "--no-progress"),
    *(
        "--train.max-steps",
        "5",
        "--train.warmup-steps",
        "1",
        "--train.log-every",
        "1",
        "--train.eval-every",
        "5",
    ),
]
# float32: the slices' chunk sums and DDP's gradient average round differently from one
# process, and AdamW's division by sqrt(v) amplifies that in small gradients; measured over these
# 5 steps: 4.4e-8 (losses, relative) and 9.5e-6 (weights, absolute, for weights up to 6.6)
LOSS_RTOL, WEIGHT_ATOL = 1e-6, 5e-5


@pytest.mark.slow
@pytest.mark.parametrize(
    ("parallel", "resets"),
    [("ddp", False), ("fsdp", False), ("ddp", True)],
    ids=["ddp", "fsdp", "ddp-resets"],
)
def test_training_with_context_parallel_equals_one_process(
    tmp_path, byte_data, parallel: str, resets: bool
) -> None:
    """2 ranks that split every sequence of the same 4 rows (--train.context-parallel 2) train as
    one process, under DDP and with the parameters sharded over the same two ranks (FSDP), and
    with the state restarting at every document (--data.reset-at-documents: documents cross
    the slice boundary): losses per step and final weights equal to float32 rounding."""
    import json

    from safetensors.torch import load_file

    from gateloop.cli import main

    common = ["train", "lm", "--data", str(byte_data), *LM_FLAGS]
    if resets:
        common += ["--data.reset-at-documents", "true"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    cp = [*cmd, "gateloop", *common, "--train.context-parallel", "2", "--train.parallel", parallel]
    cp += ["--out", str(tmp_path / "cp")]
    done = subprocess.run(cp, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    def losses(run: str) -> list[float]:
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    assert len(losses("one")) == 5 and losses("cp") == pytest.approx(losses("one"), rel=LOSS_RTOL)
    wa, wb = (load_file(str(tmp_path / run / "final" / "model.safetensors")) for run in ("one", "cp"))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=WEIGHT_ATOL, msg=name)
    resolved = json.loads((tmp_path / "cp" / "config.json").read_text())["resolved"]
    assert resolved["context_parallel"] == 2 and resolved["world_size"] == 2
    assert resolved["sharded"] == (parallel == "fsdp")


def test_context_parallel_without_enough_processes_is_refused(tmp_path, byte_data, capsys) -> None:
    from gateloop.cli import main

    args = ["train", "lm", "--data", str(byte_data), *LM_FLAGS, "--train.context-parallel", "2"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 1
    assert "--train.context-parallel 2 must divide the number of processes, got 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_sequences_split_evenly_or_are_refused() -> None:
    from gateloop.training.distributed import Runtime, sequence_slice

    ranks = [Runtime(torch.device("cpu"), rank=r, world_size=4, cp_size=2) for r in range(4)]
    assert [sequence_slice(32, r) for r in ranks] == [slice(0, 16), slice(16, 32)] * 2
    assert [(r.dp_rank, r.dp_size, r.cp_rank) for r in ranks] == [(0, 2, 0), (0, 2, 1), (1, 2, 0), (1, 2, 1)]
    with pytest.raises(ValueError, match=r"length 33 is not divisible by --train\.context-parallel 2"):
        sequence_slice(33, ranks[0])


def test_the_transformer_cannot_split_a_sequence() -> None:
    from gateloop.models import TransformerConfig, TransformerLM
    from gateloop.training.parallel import check_context_parallel

    with pytest.raises(ValueError, match="needs GateLoop layers"):
        check_context_parallel(TransformerLM(TransformerConfig.tiny()))
