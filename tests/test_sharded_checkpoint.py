"""Sharded (DCP) checkpoints in one process: the same guarantees as full ones (exact resume, a
torn checkpoint skipped for the one before it), consolidation to one model directory, and the
errors around them. The 2-rank FSDP run with sharded checkpoints is in tests/test_fsdp.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gateloop.cli import main
from gateloop.models import GateLoopConfig, GateLoopLM
from gateloop.training.checkpoint import trained_model_dir
from gateloop.training.sharded_checkpoint import consolidate, load_shards, save_shards
from tests.test_fsdp import FLAGS

SHARDED = ["--train.parallel", "fsdp", "--train.checkpoint-format", "sharded"]


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]  # a time, not a result


def test_a_sharded_run_resumes_exactly_and_skips_a_torn_checkpoint(tmp_path, byte_data) -> None:
    """Killed before final/ with the step-6 checkpoint's shard file torn: the resume warns, falls
    back to step 4 and ends equal to the uninterrupted run (metrics rows and weights, bit for
    bit); consolidating step 6 gives final/'s weights."""
    run = tmp_path / "run"
    args = ["train", "lm", "--data", str(byte_data), *FLAGS, *SHARDED, "--no-progress", "--out", str(run)]
    assert main(args) == 0
    step6 = run / "checkpoints" / "step_00000006"
    assert (step6 / "sharded" / ".metadata").is_file() and not (step6 / "model.safetensors").exists()
    assert (step6 / "rng" / "rank_00000.pt").is_file()
    final = load_file(str(run / "final" / "model.safetensors"))
    assert main(["convert", "consolidate", "--checkpoint", str(step6), "--out", str(tmp_path / "c")]) == 0
    whole = load_file(str(tmp_path / "c" / "model.safetensors"))
    assert whole.keys() == final.keys() and all(torch.equal(whole[k], final[k]) for k in final)

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "final")
    (resumed / "eval.json").unlink()
    shard = resumed / "checkpoints" / "step_00000006" / "sharded" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:64])
    with pytest.warns(
        RuntimeWarning, match=r"step_00000006/sharded cannot be read.*the checkpoint before it"
    ):
        assert main([*args[:-1], str(resumed), "--resume"]) == 0
    assert _rows(resumed) == _rows(run)
    again = load_file(str(resumed / "final" / "model.safetensors"))
    assert all(torch.equal(again[k], final[k]) for k in final)


def test_shards_round_trip_model_and_optimizer(tmp_path) -> None:
    """save_shards / load_shards in one process: weights and AdamW's moments as saved; another
    model config is refused, naming the field."""
    torch.manual_seed(0)
    model = GateLoopLM(GateLoopConfig.tiny())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randint(0, 97, (2, 5))).sum().backward()
    optimizer.step()
    model.config.save(tmp_path / "config.json")
    save_shards(tmp_path, model, optimizer, rank=0)
    torch.manual_seed(1)
    other = GateLoopLM(GateLoopConfig.tiny())
    other_optimizer = torch.optim.AdamW(other.parameters(), lr=1e-2)
    load_shards(tmp_path, other, other_optimizer, rank=0)
    ours, theirs = model.state_dict(), other.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    saved, loaded = optimizer.state_dict()["state"], other_optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    for key in saved:
        assert all(torch.equal(saved[key][m], loaded[key][m]) for m in ("exp_avg", "exp_avg_sq", "step"))
    with pytest.raises(ValueError, match=r"does not match the model's config: n_layer \(saved 2, model 3\)"):
        load_shards(tmp_path, GateLoopLM(GateLoopConfig.tiny(n_layer=3)), None, rank=0)


def test_sharded_checkpoints_need_fsdp(tmp_path, byte_data, capsys) -> None:
    args = ["train", "lm", "--data", str(byte_data), *FLAGS, "--train.checkpoint-format", "sharded"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 1
    assert "checkpoint_format 'sharded' needs parallel 'fsdp'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_consolidate_and_readers_explain_a_sharded_checkpoint(tmp_path) -> None:
    """consolidate refuses a full checkpoint and a missing directory; a run whose only weights are
    sharded is not a model directory, and the error says which command makes one."""
    torch.manual_seed(0)
    model = GateLoopLM(GateLoopConfig.tiny())
    model.save_pretrained(tmp_path / "full")
    with pytest.raises(ValueError, match="is not a sharded checkpoint"):
        consolidate(tmp_path / "full", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        consolidate(tmp_path / "nowhere", tmp_path / "out")
    step = tmp_path / "run" / "checkpoints" / "step_00000002"
    step.mkdir(parents=True)
    model.config.save(step / "config.json")
    save_shards(step, model, torch.optim.AdamW(model.parameters()), rank=0)
    torch.save({"step": 2}, step / "trainer_state.pt")
    with pytest.raises(FileNotFoundError, match=r"is a sharded checkpoint.*gateloop convert consolidate"):
        trained_model_dir(tmp_path / "run")
