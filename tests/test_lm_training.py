"""Language-model training, evaluation protocol, sampling and 2-process DDP (gloo)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gateloop.cli import main
from gateloop.data.prepare import prepare
from gateloop.data.tokens import TokenDataset
from gateloop.experiments import language_model as lm
from gateloop.experiments.language_model_report import unigram_perplexity
from gateloop.models import GateLoopConfig, GateLoopLM
from gateloop.training import Runtime
from tests.training_helpers import TOY_LM_MODEL

SOTU = Path(__file__).parent / "data" / "sotu"
TOY = {
    "model.d_model": 32,
    "model.n_layer": 2,
    "model.n_head": 4,
    "model.d_channel_mixing": 64,
    "data.seq_len": 32,
    "data.eval_tokens": 400,
    "train.batch_size": 4,
    "train.max_steps": 6,
    "train.eval_every": 3,
    "train.warmup_steps": 2,
    "train.checkpoint_every": 3,
}
TOY_FLAGS = [
    *TOY_LM_MODEL,
    *("--data.seq-len", "32", "--data.eval-tokens", "400"),
    *("--train.max-steps", "4", "--train.eval-every", "100", "--train.warmup-steps", "1", "--no-progress"),
]


def toy(data: Path, model: str = "gateloop", **overrides) -> lm.LMRun:
    return lm.preset("cpu", model, {**TOY, "data.path": str(data), **overrides})


@pytest.mark.parametrize("model", lm.MODELS)
def test_train_each_model(tmp_path, byte_data, model: str) -> None:
    result = lm.train(toy(byte_data, model), tmp_path / model, progress=False)
    assert result.steps == 6 and np.isfinite(result.evaluation["val_loss"])
    rows = [json.loads(x) for x in (tmp_path / model / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_perplexity" in r] == [3, 6]
    assert (tmp_path / model / "final" / "model.safetensors").is_file()
    if model == "gateloop-fixed":
        layer = GateLoopLM.from_pretrained(tmp_path / model / "final").blocks[0].time_mixing
        assert not layer.data_controlled


def test_loss_decreases(tmp_path, byte_data) -> None:
    run = toy(byte_data, **{"train.max_steps": 40, "train.eval_every": 40, "train.lr": 3e-3})
    lm.train(run, tmp_path / "run", progress=False)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(x)]  # fmt: skip
    assert losses[-1] < losses[0] - 1.0  # from ~ln(257) = 5.5 towards byte-level English


def test_resume_with_changed_config_is_refused(tmp_path, byte_data) -> None:
    lm.train(toy(byte_data), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"different config .*train\.lr: 0\.002 -> 0\.001"):
        lm.train(toy(byte_data, **{"train.lr": 1e-3}), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(ValueError, match=r"train\.max_steps: 6 -> 8"):  # the lr schedule depends on it
        lm.train(toy(byte_data, **{"train.max_steps": 8}), tmp_path / "run", resume=True, progress=False)
    lm.train(toy(byte_data, **{"train.eval_every": 2}), tmp_path / "run", resume=True, progress=False)


def test_seq_len_beyond_the_data(tmp_path, byte_data) -> None:
    with pytest.raises(
        ValueError, match=r"seq_len 20000 is beyond the data: split 'val' .* has only \d+ tokens"
    ):
        lm.train(toy(byte_data, **{"data.seq_len": 20_000}), tmp_path / "run", progress=False)


def test_batches_are_a_function_of_step_and_split_by_rank(byte_data) -> None:
    tokens = TokenDataset(byte_data)["train"]
    run = toy(byte_data)
    cpu = torch.device("cpu")
    whole = lm.make_batch_fn(run, tokens, Runtime(cpu))
    halved = toy(byte_data, **{"train.batch_size": 2})
    halves = [lm.make_batch_fn(halved, tokens, Runtime(cpu, rank=r, world_size=2)) for r in (0, 1)]
    assert torch.equal(whole(5, 0), whole(5, 0)) and not torch.equal(whole(5, 0), whole(6, 0))
    assert torch.equal(whole(5, 0), torch.cat([h(5, 0) for h in halves]))
    assert whole(0, 0).shape == (4, 33)


def test_document_ids_of_a_split_sequence_are_the_windows(byte_data) -> None:
    """Under context parallelism with document resets each rank's batch carries the whole window's
    document ids, sliced: numbered alike across the slices (a document that starts at the slice
    boundary shows as a changed id there), so the layer can restart the state exactly."""
    tokens = np.random.default_rng(0).integers(0, 4, 5000).astype(np.uint16)  # eot (0) every ~4 tokens
    run = toy(byte_data)
    cpu = torch.device("cpu")
    tokens_whole, ids_whole = lm.make_batch_fn(run, tokens, Runtime(cpu), eot_id=0)(3, 0)
    slices = [
        lm.make_batch_fn(run, tokens, Runtime(cpu, rank=r, world_size=2, cp_size=2), eot_id=0)(3, 0)
        for r in (0, 1)
    ]
    assert torch.equal(ids_whole, lm.document_ids(tokens_whole[:, :-1], 0))
    assert torch.equal(torch.cat([ids for _, ids in slices], dim=1), ids_whole)
    assert torch.equal(slices[1][0], tokens_whole[:, 16:])  # inputs 16..31 and their targets
    assert (ids_whole[:, 16] != ids_whole[:, 15]).any()  # some row starts a document at the boundary


def test_document_ids() -> None:
    ids = lm.document_ids(torch.tensor([[5, 6, 0, 7, 0, 0, 8]]), eot_id=0)
    assert ids.tolist() == [[0, 0, 0, 1, 1, 2, 3]]


def test_perplexity_protocol() -> None:
    """A model with all-zero logits has perplexity = vocab size; every target is scored once."""
    model = GateLoopLM(GateLoopConfig.tiny(vocab_size=50))
    torch.nn.init.zeros_(model.head.weight)
    tokens = np.random.default_rng(0).integers(0, 50, 1000).astype(np.uint16)
    full = lm.evaluate_perplexity(model, tokens, seq_len=64)
    sliding = lm.evaluate_perplexity(model, tokens, seq_len=64, stride=16)
    assert full["tokens"] == sliding["tokens"] == 999
    assert full["perplexity"] == pytest.approx(50.0, rel=1e-4)
    assert lm.evaluate_perplexity(model, tokens, seq_len=64, max_tokens=100)["tokens"] == 100
    with pytest.raises(ValueError, match="stride must be in"):
        lm.evaluate_perplexity(model, tokens, seq_len=64, stride=65)


def test_cli_train_eval_sample(tmp_path, byte_data, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "lm", "--data", str(byte_data), "--out", str(run), *TOY_FLAGS]) == 0
    assert main(["eval", "lm", "--run", str(run), "--split", "val", "--stride", "16"]) == 0
    assert "windows of 32 tokens sliding by 16" in capsys.readouterr().out
    assert json.loads((run / "eval_val.json").read_text())["perplexity"] > 1
    assert main(["sample", "--run", str(run), "--prompt", "Fellow", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.startswith("Fellow")


def test_tokenizer_mismatch_is_named(tmp_path, byte_data) -> None:
    data = tmp_path / "data"
    shutil.copytree(byte_data, data)
    run = tmp_path / "run"
    assert main(["train", "lm", "--data", str(data), "--out", str(run), *TOY_FLAGS]) == 0
    prepare("text", data, path=SOTU, tokenizer_name="bpe", vocab_size=300, workers=1, progress=False)
    with pytest.raises(ValueError, match="tokenizer mismatch: the run was trained with"):
        lm.load_run(run)


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path, byte_data) -> None:
    """torchrun with 2 gloo processes (batch 2 each) = one process with batch 4: same loss, same weights."""
    common = ["train", "lm", "--data", str(byte_data), *TOY_FLAGS]
    assert main([*common, "--train.batch-size", "4", "--out", str(tmp_path / "one")]) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [*torchrun, "-m", "gateloop", *common, "--train.batch-size", "2", "--out", str(tmp_path / "two")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = (
        [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        for d in ("one", "two")
    )
    assert one[0]["loss"] == pytest.approx(two[0]["loss"], rel=1e-6)
    wa, wb = (load_file(str(tmp_path / d / "final" / "model.safetensors")) for d in ("one", "two"))
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-4), name


@pytest.mark.parametrize("vocab", [257, 8192, 50257])
@pytest.mark.parametrize("preset", ["cpu", "wikitext103_125m"])
def test_matched_parameter_counts(preset: str, vocab: int) -> None:
    base = lm.preset(preset, overrides={"model.vocab_size": vocab})
    with torch.device("meta"):
        counts = {
            m: lm.build_model(lm.as_model(base, m, match_parameters=True).model).num_parameters()
            for m in lm.MODELS
        }
    assert max(counts.values()) <= 1.05 * min(counts.values()), counts


def test_unigram_perplexity() -> None:
    tokens = np.array([0, 1, 1, 1], dtype=np.uint16)
    # add-one counts over vocab 2: p(0) = 2/6, p(1) = 4/6; the test targets are tokens[1:] = 1, 1, 1
    assert unigram_perplexity(tokens, tokens, 2) == pytest.approx(1.5)


def test_experiment_lm_writes_table_and_plot(tmp_path, byte_data, capsys) -> None:
    flags = [f for f in TOY_FLAGS]
    assert main(["experiment", "lm", "--data", str(byte_data), "--out", str(tmp_path / "exp"), *flags]) == 0
    table = (tmp_path / "exp" / "results.md").read_text()
    assert "| gateloop |" in table and "13.4 (paper)" in table and "18.6 (paper)" in table
    assert "Unigram baseline" in table
    assert (tmp_path / "exp" / "validation_loss.png").stat().st_size > 0
    summary = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert set(summary["results"]) == set(lm.MODELS)


@pytest.mark.parametrize("model", ["gateloop", "transformer"])
def test_bf16_autocast_and_grad_accum(tmp_path, byte_data, model: str) -> None:
    run = toy(byte_data, model, **{"train.autocast": "bf16", "train.grad_accum": 2, "train.max_steps": 3})
    result = lm.train(run, tmp_path / "run", progress=False).summary()
    assert result["steps"] == 3 and np.isfinite(result["loss"]) and np.isfinite(result["val_loss"])
