"""EleutherAI lm-eval (the ``[eval]`` extra, 0.4.x) on a GateLoop model.

``evaluate_harness(source, tasks)`` runs lm-eval's ``hf`` model on a Hugging Face directory of
ours: ``source`` is one (from ``gateloop convert to-hf``), or a gateloop run / model directory,
converted first into a temporary directory. Task names are checked before anything loads.
"""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateloop.file_errors import read_json_object
from gateloop.hf.convert import BY_HF_TYPE, native_to_hf
from gateloop.training.checkpoint import resolve_model_dir


def is_hf_dir(directory: Path) -> bool:
    """Whether ``directory`` holds our Hugging Face layout (not a run, not gateloop's own layout)."""
    path = directory / "config.json"
    if not path.is_file():
        return False
    saved = read_json_object(path, "a model config")
    return saved.get("model_type") in BY_HF_TYPE and "d_model" not in saved and "task" not in saved


def check_language_model(source: Path) -> None:
    """ValueError unless ``source`` is a model lm-eval can score text with: a language-model run
    (or its checkpoint), or an HF directory with its tokenizer. A Memory Horizon run is named as
    one (its tokens are no text; lm-eval would fail later, asking for a tokenizer)."""
    if is_hf_dir(source):
        if not (source / "tokenizer.json").is_file():
            raise ValueError(
                f"{source} has no tokenizer.json: lm-eval scores text, so the model needs the tokenizer it "
                "was trained with (`gateloop convert to-hf` writes it for a `gateloop train lm` run)"
            )
        return
    _, run_dir = resolve_model_dir(source)
    task = read_json_object(run_dir / "config.json", "a run config").get("task") if run_dir else None
    if task != "lm":
        what = f"a {task!r} run" if run_dir is not None else "a model directory outside any run"
        raise ValueError(
            f"{source} is {what}, not a language-model run: lm-eval scores text, which needs a model "
            "trained on text and its tokenizer (`gateloop train lm`)"
        )


def check_tasks(tasks: Sequence[str], manager: Any) -> None:
    """ValueError naming every task lm-eval does not know, with the closest known names."""
    if isinstance(tasks, str) or not tasks:
        raise ValueError(f"tasks must be a non-empty list of lm-eval task names, got {tasks!r}")
    known = set(manager.all_tasks)
    unknown = [task for task in tasks if task not in known]
    if unknown:
        hints = {task: difflib.get_close_matches(task, known, n=3) for task in unknown}
        listing = "; ".join(f"{t!r} (closest: {', '.join(h) or 'none'})" for t, h in hints.items())
        raise ValueError(
            f"unknown lm-eval task {listing}. `lm_eval ls tasks` lists them; tasks of your own need "
            "--include-path DIR (a directory of task YAML files)"
        )


def evaluate_harness(
    source: str | Path,
    tasks: Sequence[str],
    *,
    include_path: str | Path | None = None,
    include_defaults: bool = True,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int = 1,
    device: str = "cpu",
    dtype: str = "float32",
    log_samples: bool = False,
) -> dict[str, Any]:
    """lm-eval's results dict (``results[task][metric]``, plus ``samples`` with ``log_samples``).

    include_path: a directory of task YAMLs of your own; include_defaults=False skips lm-eval's
    built-in tasks (indexing them takes seconds). The model is loaded through
    ``AutoModelForCausalLM`` exactly as ``lm_eval --model hf`` loads it.
    """
    source = Path(source)
    check_language_model(source)  # before lm-eval's import and task index: seconds
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(
        include_path=None if include_path is None else str(include_path), include_defaults=include_defaults
    )
    check_tasks(list(tasks), manager)
    with tempfile.TemporaryDirectory(prefix="gateloop-hf-") as scratch:
        hf_dir = source if is_hf_dir(source) else native_to_hf(source, Path(scratch) / "hf")
        results = simple_evaluate(
            model="hf",
            model_args={"pretrained": str(hf_dir), "dtype": dtype},
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            limit=limit,
            batch_size=batch_size,
            device=device,
            task_manager=manager,
            log_samples=log_samples,
        )
    if results is None:  # lm-eval returns None on the non-zero ranks of a distributed run
        return {}
    return dict(results)
