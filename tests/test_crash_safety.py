"""Run directories survive kills, torn files and a second writer (issue: crash safety)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from gateloop.models import GateLoopLM
from gateloop.training import MetricsLogger, trained_model_dir
from gateloop.training.checkpoint import CorruptCheckpointError, checkpoint_dirs
from gateloop.training.run_dir import RunLock, RunLockedError

from training_helpers import train_tiny


def _train(run_dir, *, resume: bool = False, fail_at: int | None = None) -> GateLoopLM:
    return train_tiny(run_dir, resume=resume, fail_at=fail_at).model  # type: ignore[return-value]


def _truncate(path, keep: int = 100) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> GateLoopLM:
    return _train(tmp_path_factory.mktemp("straight") / "run")


def _same(a: GateLoopLM, b: GateLoopLM) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path, straight) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", fail_at=10)  # checkpoints at 4 and 8
    latest = checkpoint_dirs(tmp_path / "run")[-1]
    _truncate(latest / "model.safetensors")
    with pytest.warns(
        RuntimeWarning, match=r"step_00000008/model\.safetensors is corrupt .* checkpoint before it"
    ):
        resumed = _train(tmp_path / "run", resume=True)
    _same(straight, resumed)  # nothing lost: steps 5..15 recomputed exactly


def test_corrupt_trainer_state_falls_back_too(tmp_path, straight) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", fail_at=10)
    (checkpoint_dirs(tmp_path / "run")[-1] / "trainer_state.pt").write_bytes(b"\x00" * 10)
    with pytest.warns(RuntimeWarning, match=r"trainer_state\.pt is corrupt"):
        _same(straight, _train(tmp_path / "run", resume=True))


def test_no_readable_checkpoint_is_an_error(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", fail_at=6)  # one checkpoint, at 4
    _truncate(checkpoint_dirs(tmp_path / "run")[0] / "model.safetensors")
    with pytest.warns(RuntimeWarning), pytest.raises(CorruptCheckpointError, match="no readable checkpoint"):
        _train(tmp_path / "run", resume=True)


def test_corrupt_final_model_falls_back_to_the_last_checkpoint(tmp_path, straight) -> None:
    _train(tmp_path / "run")
    _truncate(tmp_path / "run" / "final" / "model.safetensors")
    with pytest.warns(RuntimeWarning, match=r"final/model\.safetensors is corrupt .* using .*step_00000015"):
        assert trained_model_dir(tmp_path / "run").name == "step_00000015"


def test_leftovers_of_interrupted_writes_are_swept(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", fail_at=10)
    leftovers = [
        tmp_path / "run" / "checkpoints" / ".tmp_step_00000012",  # killed while saving
        tmp_path / "run" / "checkpoints" / ".trash_step_00000000",  # killed while pruning
        tmp_path / "run" / ".tmp_final",
    ]
    for path in leftovers:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"x" * 1000)
    with pytest.warns(RuntimeWarning, match="removed what an interrupted run left behind"):
        _train(tmp_path / "run", resume=True)
    assert not any(p.exists() for p in leftovers)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step_00000012",
        "step_00000015",
    ]


def test_torn_metrics_line_is_dropped_and_rewrite_is_complete(tmp_path) -> None:
    log = MetricsLogger(tmp_path)
    for step in range(1, 4):
        log.log({"step": step, "loss": 1.0})
    with log.jsonl.open("a") as f:
        f.write('{"step": 4, "lo')  # a kill mid-write
    with pytest.warns(RuntimeWarning, match="dropped a torn last line"):
        log.truncate_after(3)
    assert [r["step"] for r in log.read()] == [1, 2, 3]
    assert not list(tmp_path.glob(".tmp_*"))  # the rewrite went through a temporary file
    assert log.csv.read_text().splitlines()[-1].startswith("3,")
    log.jsonl.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 2 is not valid JSON"):
        log.read()


def test_a_second_writer_is_refused(tmp_path) -> None:
    refused = pytest.raises(RunLockedError, match=rf"being written by pid {os.getpid()}")
    with RunLock(tmp_path / "run"), refused:
        _train(tmp_path / "run")
    _train(tmp_path / "run")  # released on exit


def test_lock_of_a_killed_process_is_stale(tmp_path) -> None:
    """The kernel drops a dead holder's lock: a run killed with SIGKILL never blocks the next one."""
    code = (
        "import os, signal, sys; from gateloop.training.run_dir import RunLock; "
        f"RunLock({str(tmp_path / 'run')!r}).__enter__(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False)
    assert done.returncode == -9 and "pid" in (tmp_path / "run" / ".lock").read_text()
    with RunLock(tmp_path / "run"):
        pass


def test_resume_with_other_thread_count_warns(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "run", fail_at=6)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["resolved"]["threads"] == torch.get_num_threads()
    saved["resolved"]["threads"] += 1
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    with pytest.warns(RuntimeWarning, match=r"started with \d+ CPU threads and resumes with"):
        _train(tmp_path / "run", resume=True)


def test_corrupt_config_json_is_named(tmp_path) -> None:
    from gateloop.training import read_run_config

    (tmp_path / "config.json").write_text('{"task": "memory-hori')
    with pytest.raises(ValueError, match=r"config\.json is corrupt, not valid JSON"):
        read_run_config(tmp_path)


def test_sigterm_stops_a_command_as_ctrl_c_does(tmp_path) -> None:
    """`kill PID` mid-run: exit 143 with one line, the checkpoint kept and the grid's run time
    counted (an uncaught SIGTERM would lose it); the unfinished run is not in a --report."""
    out = tmp_path / "grid"
    argv = [sys.executable, "-m", "gateloop", "experiment", "ablations", "--task", "memory-horizon"]
    argv += ["--variants", "gateloop", "--seeds", "0", "--out", str(out), "--no-progress", "--threads", "1"]
    argv += ["--data.seq-len", "16", "--data.num-train", "8", "--data.num-test", "4", "--model.n-layer", "1"]
    argv += ["--train.batch-size", "4", "--train.warmup-steps", "1", "--train.checkpoint-every", "2"]
    run_dir = out / "gateloop" / "seed0"
    with subprocess.Popen([*argv, "--train.max-steps", "100000"], stderr=subprocess.PIPE, text=True) as job:
        while not (run_dir / "checkpoints").is_dir() or not checkpoint_dirs(run_dir):
            assert job.poll() is None, job.stderr.read() if job.stderr else ""
            time.sleep(0.05)
        job.send_signal(signal.SIGTERM)
        _, err = job.communicate(timeout=60)
    assert job.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("gateloop: terminated (a training run continues")
    assert json.loads((run_dir / "wall_time.json").read_text())["seconds"] > 0
    assert not (run_dir / "final").exists()
    report = subprocess.run([*argv, "--train.max-steps", "100000", "--report"], capture_output=True)
    assert report.returncode == 1 and b"no finished run" in report.stderr


def test_wall_time_is_summed_over_sessions_and_unknown_when_uncounted(tmp_path, monkeypatch) -> None:
    """A report's wall time is the run's whole cost: sessions add up (one stopped by Ctrl-C too);
    a directory trained before its first counted session stays unknown, never a wrong total."""
    from gateloop.training import current_runtime
    from gateloop.training.wall_time import counted_wall_time, minutes, read_wall_time

    clock = iter([0.0, 60.0, 100.0, 130.0, 0.0, 5.0, 10.0, 20.0])
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    run_dir, runtime = tmp_path / "run", current_runtime()
    with counted_wall_time(run_dir, runtime) as first:
        run_dir.mkdir()  # training creates the directory
    assert first.seconds == read_wall_time(run_dir) == 60.0
    with pytest.raises(KeyboardInterrupt), counted_wall_time(run_dir, runtime) as second:
        raise KeyboardInterrupt
    assert second.seconds == read_wall_time(run_dir) == 90.0 and minutes(90.0) == "1.5 min"

    old = tmp_path / "old"  # trained before wall times were kept
    old.mkdir()
    for _ in range(2):
        with counted_wall_time(old, runtime) as total:
            pass
        assert total.seconds is None and read_wall_time(old) is None and minutes(None) == "unknown"
