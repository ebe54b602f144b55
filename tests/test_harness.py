"""lm-eval (the [eval] extra) on a GateLoop model, offline: a task of our own over tests/data, one
number checked against log-likelihoods computed by hand with our model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from test_hf import _fake_run  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from gateloop.hf.convert import native_to_hf  # noqa: E402
from gateloop.hf.harness import evaluate_harness  # noqa: E402
from gateloop.models import GateLoopConfig, GateLoopLM  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "tests" / "data" / "lm_eval"


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: a tiny model's forward is ~1 ms alone but can take 100x that when two OpenMP
    threads fight other processes for 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("harness")
    model = GateLoopLM(GateLoopConfig.tiny(vocab_size=300)).eval()
    return native_to_hf(_fake_run(tmp, model), tmp / "hf")


def _loglikelihood(model: GateLoopLM, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) as lm-eval scores it: encode the whole string, the
    continuation is what follows the context's tokens."""
    whole = tokenizer(context + continuation)["input_ids"]
    n_context = len(tokenizer(context)["input_ids"])
    ids = torch.tensor([whole])
    logp = torch.log_softmax(model(ids[:, :-1]).double(), dim=-1)[0]  # (len - 1, V)
    targets = ids[0, n_context:]
    return float(logp[n_context - 1 :].gather(-1, targets[:, None]).sum())


def test_own_task_accuracy_equals_hand_computed(hf_dir, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the task's data_files are relative to the repository root
    results = evaluate_harness(
        hf_dir, ["sotu_choice"], include_path=TASKS, include_defaults=False, log_samples=True
    )
    model = GateLoopLM.from_pretrained(hf_dir.parent / "run" / "final").eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    docs = [json.loads(line) for line in (TASKS / "sotu_choice.jsonl").read_text().splitlines()]
    correct = []
    with torch.no_grad():
        for doc in docs:
            lls = [_loglikelihood(model, tokenizer, doc["context"], " " + c) for c in doc["choices"]]
            correct.append(max(range(len(lls)), key=lls.__getitem__) == doc["gold"])
            sample = next(
                s for s in results["samples"]["sotu_choice"] if s["doc"]["context"] == doc["context"]
            )
            harness = [float(r[0][0]) for r in sample["resps"]]
            assert harness == pytest.approx(lls, abs=1e-4)
    assert results["results"]["sotu_choice"]["acc,none"] == pytest.approx(sum(correct) / len(docs))


def test_unknown_task_is_named(hf_dir) -> None:
    with pytest.raises(ValueError, match=r"unknown lm-eval task 'sotu_choise' \(closest: sotu_choice\)"):
        evaluate_harness(hf_dir, ["sotu_choise"], include_path=TASKS, include_defaults=False)


def test_lm_eval_command_on_a_converted_directory(hf_dir) -> None:
    """The README's `lm_eval --model hf` line: trust_remote_code finds our classes via auto_map."""
    import subprocess
    import sys

    command = [
        *(sys.executable, "-m", "lm_eval", "--model", "hf"),
        *("--model_args", f"pretrained={hf_dir},trust_remote_code=True", "--device", "cpu"),
        *("--tasks", "sotu_choice", "--include_path", "tests/data/lm_eval", "--limit", "2"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sotu_choice" in done.stdout and "acc" in done.stdout


def _readme_commands(section: str) -> list[str]:
    """The `gateloop ...` lines of the bash blocks of README section ``section``."""
    import re

    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", body, flags=re.S)
    return [
        line.split("  #")[0].strip()
        for b in blocks
        for line in b.splitlines()
        if line.startswith("gateloop ")
    ]


def test_readme_hf_and_lm_eval_commands_run_as_written(tmp_path, monkeypatch) -> None:
    """Every offline `gateloop` command of both README sections, in a directory laid out as the
    README assumes (runs/lm-cpu-gateloop from `gateloop train lm --preset cpu`, tests/data)."""
    import shlex

    from gateloop.cli import main

    torch.manual_seed(0)
    (tmp_path / "made").mkdir()
    run = _fake_run(tmp_path / "made", GateLoopLM(GateLoopConfig.tiny(vocab_size=300)).eval())
    (tmp_path / "runs").mkdir()
    run.rename(tmp_path / "runs" / "lm-cpu-gateloop")
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    monkeypatch.chdir(tmp_path)
    commands = _readme_commands("Use with Hugging Face") + _readme_commands("Evaluate with lm-eval")
    offline = [c for c in commands if "harness" not in c or "sotu_choice" in c]
    assert len(offline) == 3 and len(commands) == 4
    for command in offline:
        assert main(shlex.split(command)[1:]) == 0, command
    back = GateLoopLM.from_pretrained(tmp_path / "runs" / "lm-cpu-gateloop-back")
    assert back.config.vocab_size == 300
    results = json.loads((tmp_path / "runs" / "lm-cpu-gateloop" / "harness.json").read_text())
    assert 0 <= results["results"]["sotu_choice"]["acc,none"] <= 1
