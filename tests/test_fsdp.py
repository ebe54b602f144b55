"""FSDP2 in the trainer (``--train.parallel fsdp``): 2 gloo ranks against one process, exact
resume of a sharded run, and the checks around it. The multi-process tests are marked slow
(each is one or two tiny ``torchrun`` jobs on 2 cores)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gateloop.cli import main
from tests.training_helpers import TOY_LM_MODEL

STEPS = (
    "--train.max-steps",
    "6",
    "--train.warmup-steps",
    "1",
    "--train.checkpoint-every",
    "2",
    "--train.log-every",
    "1",
)
FLAGS = [
    *TOY_LM_MODEL,
    "--data.seq-len",
    "32",
    "--data.eval-tokens",
    "400",
    *STEPS,
    "--train.eval-every",
    "3",
]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# float32 rounding: FSDP reduce-scatters gradients where one process sums them in one pass, and
# AdamW divides by sqrt(v) + eps, which turns the last-digit differences of small gradients into
# relative ones; measured over these 6 steps: 8.8e-8 (losses, relative) and 4.3e-6 (weights,
# absolute, for weights up to 6.6)
LOSS_RTOL, WEIGHT_ATOL = 1e-6, 2e-5


def _torchrun(*args: str) -> None:
    cmd = [*TORCHRUN, "-m", "gateloop", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in _rows(run) if "loss" in r]


@pytest.mark.slow
def test_fsdp_two_ranks_match_one_process_and_resume_exactly(tmp_path, byte_data) -> None:
    """2 FSDP ranks of batch 2 = one process of batch 4: losses per step and final weights equal to
    float32 rounding; final/ holds full tensors (one model.safetensors, read as a one-process
    run's); the checkpoints are sharded (DCP: one shard file and one RNG file per rank, no
    model.safetensors) and consolidate to final/'s weights bit for bit; a run killed after step 4
    whose step-6 checkpoint lost a rank's shard falls back to step 4, resumes, and ends
    bit-identical to the uninterrupted one (metrics rows and weights)."""
    common = ["train", "lm", "--data", str(byte_data), *FLAGS, "--no-progress"]
    assert main([*common, "--train.batch-size", "4", "--out", str(tmp_path / "one")]) == 0
    fsdp = [*common, "--train.batch-size", "2", "--train.parallel", "fsdp"]
    _torchrun(*fsdp, "--out", str(tmp_path / "fsdp"))

    resolved = json.loads((tmp_path / "fsdp" / "config.json").read_text())["resolved"]
    assert resolved["sharded"] and resolved["world_size"] == 2
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "fsdp")
    assert len(one) == len(two) == 6
    assert two == pytest.approx(one, rel=LOSS_RTOL)
    wa, wb = (load_file(str(tmp_path / d / "final" / "model.safetensors")) for d in ("one", "fsdp"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert wa[name].shape == wb[name].shape, name  # full tensors, not one rank's shard
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=WEIGHT_ATOL, msg=name)
    evaluation = json.loads((tmp_path / "fsdp" / "eval.json").read_text())
    assert evaluation["steps"] == 6 and evaluation["val_perplexity"] > 1

    step6 = tmp_path / "fsdp" / "checkpoints" / "step_00000006"
    files = sorted(str(p.relative_to(step6)) for p in step6.rglob("*") if p.is_file())
    assert files == [
        "config.json",
        "rng/rank_00000.pt",
        "rng/rank_00001.pt",
        "sharded/.metadata",
        "sharded/__0_0.distcp",
        "sharded/__1_0.distcp",
        "trainer_state.pt",
    ]
    assert main(["convert", "consolidate", "--checkpoint", str(step6), "--out", str(tmp_path / "whole")]) == 0
    consolidated = load_file(str(tmp_path / "whole" / "model.safetensors"))
    assert consolidated.keys() == wb.keys() and all(torch.equal(consolidated[n], wb[n]) for n in wb)

    # killed after step 6 was published but before final/: and step 6 lost rank 1's shards (a
    # torn file), so the resume falls back to step 4; metrics rows past 4 are kept and replaced
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "fsdp", resumed)
    shutil.rmtree(resumed / "final")
    shard = resumed / "checkpoints" / "step_00000006" / "sharded" / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])
    (resumed / "eval.json").unlink()
    _torchrun(*fsdp, "--out", str(resumed), "--resume")
    strip = ("tokens_per_s",)  # a time, not a result
    assert [{k: v for k, v in r.items() if k not in strip} for r in _rows(resumed)] == [
        {k: v for k, v in r.items() if k not in strip} for r in _rows(tmp_path / "fsdp")
    ]
    wc = load_file(str(resumed / "final" / "model.safetensors"))
    assert all(torch.equal(wb[name], wc[name]) for name in wb)


def test_resuming_under_another_parallel_layout_is_refused(tmp_path, byte_data, capsys) -> None:
    """A DDP (or one-process) run resumed with --train.parallel fsdp: one line naming the field,
    nothing written."""
    run = tmp_path / "run"
    common = ["train", "lm", "--data", str(byte_data), *FLAGS, "--no-progress", "--out", str(run)]
    assert main([*common, "--train.max-steps", "2", "--train.checkpoint-every", "1"]) == 0
    shutil.rmtree(run / "final")
    before = sorted(p.name for p in run.rglob("*"))
    assert main([*common, "--train.max-steps", "2", "--train.parallel", "fsdp", "--resume"]) == 1
    assert "train.parallel: 'ddp' -> 'fsdp'" in capsys.readouterr().err
    assert sorted(p.name for p in run.rglob("*")) == before


def test_a_run_from_before_the_parallel_field_resumes(tmp_path, byte_data) -> None:
    """config.json written before train.parallel existed means DDP: it resumes as it was."""
    run = tmp_path / "run"
    common = ["train", "lm", "--data", str(byte_data), *FLAGS, "--no-progress", "--out", str(run)]
    assert main([*common, "--train.max-steps", "2", "--train.checkpoint-every", "1"]) == 0
    config = json.loads((run / "config.json").read_text())
    del config["train"]["parallel"], config["train"]["cpu_offload"]
    (run / "config.json").write_text(json.dumps(config))
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / "step_00000002")
    assert main([*common, "--train.max-steps", "2", "--train.checkpoint-every", "1", "--resume"]) == 0
    assert (run / "final" / "model.safetensors").is_file()


def test_cpu_offload_without_fsdp_is_refused(tmp_path, byte_data, capsys) -> None:
    args = ["train", "lm", "--data", str(byte_data), *FLAGS, "--train.cpu-offload", "true"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 1
    assert "cpu_offload needs parallel 'fsdp', got parallel 'ddp'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_fsdp_in_one_process_is_the_plain_model(tmp_path, byte_data) -> None:
    """Without torchrun there is nothing to shard: --train.parallel fsdp trains the model itself,
    equal to the default run bit for bit."""
    common = ["train", "lm", "--data", str(byte_data), *FLAGS, "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "ddp")]) == 0
    assert main([*common, "--train.parallel", "fsdp", "--out", str(tmp_path / "fsdp")]) == 0
    wa, wb = (load_file(str(tmp_path / d / "final" / "model.safetensors")) for d in ("ddp", "fsdp"))
    assert all(torch.equal(wa[name], wb[name]) for name in wa)
    assert json.loads((tmp_path / "fsdp" / "config.json").read_text())["resolved"]["sharded"] is False


@pytest.mark.slow
def test_the_multi_node_command_runs_on_one_node(tmp_path, byte_data) -> None:
    """docs/scaling.md's multi-node launch (a c10d rendezvous instead of --standalone) on one node
    of 2 ranks, FSDP with context parallelism 2 composed, with full (gathered) checkpoints: it
    trains, the checkpoint is one model.safetensors equal to final/ (gathered on rank 0 only)."""
    import socket

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "gateloop-test",
        "-m", "gateloop", "train", "lm", "--data", str(byte_data), *FLAGS, "--no-progress",
        "--train.max-steps", "2", "--train.checkpoint-every", "2", "--train.batch-size", "2",
        "--train.parallel", "fsdp", "--train.context-parallel", "2", "--train.checkpoint-format", "full",
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert resolved["world_size"] == 2 and resolved["sharded"]
    step2 = tmp_path / "run" / "checkpoints" / "step_00000002"
    assert not (step2 / "sharded").exists()
    checkpoint, final = (load_file(str(d / "model.safetensors")) for d in (step2, tmp_path / "run" / "final"))
    assert checkpoint.keys() == final.keys() and all(torch.equal(checkpoint[k], final[k]) for k in final)
    # the gathered optimizer state: both moments of every parameter, full shapes
    optimizer = torch.load(step2 / "trainer_state.pt", weights_only=True)["optimizer"]
    assert len(optimizer["state"]) == len(final)
    # killed before final/: the resume loads the full checkpoint into the shards, ends the same
    shutil.rmtree(tmp_path / "run" / "final")
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    again = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert all(torch.equal(again[k], final[k]) for k in final)
