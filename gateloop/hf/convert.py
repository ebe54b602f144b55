"""Convert between gateloop's checkpoint layout and the Hugging Face one, weights bit-identical.

gateloop:     config.json (our ``GateLoopConfig`` / ``TransformerConfig``) + model.safetensors
              (``embed.weight``, ``blocks.0...``), in a run's ``final/`` or ``checkpoints/step_*/``
Hugging Face: config.json (``GateLoopHFConfig``: model_type "gateloop") + model.safetensors
              (``model.embed.weight``, ...) [+ tokenizer.json]; ``AutoModelForCausalLM`` loads it
              after ``import gateloop.hf``.

Only names change; every tensor is copied as stored (same dtype, same bits).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from gateloop.hf.configuration import HF_CONFIGS, _NativeBackedConfig
from gateloop.hf.modeling import HF_MODELS
from gateloop.models.base import CONFIG_NAME, WEIGHTS_NAME
from gateloop.models.registry import config_class

PREFIX = "model."  # the HF classes hold our model as ``self.model``
# the HF config classes by their own model_type ("gateloop_transformer"), as an HF config.json names it
BY_HF_TYPE: dict[str, type[_NativeBackedConfig]] = {c.model_type: c for c in HF_CONFIGS.values()}


def _read_config(directory: Path, what: str) -> dict[str, Any]:
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory ({what} expected)")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not {what}")
    return json.loads(path.read_text())


def resolve_model_dir(source: str | Path) -> tuple[Path, Path | None]:
    """(model directory, run directory or None) for a run directory (its ``final/``, else the
    latest checkpoint), a run's ``final/`` or ``checkpoints/step_*/``, or any ``save_pretrained`` dir."""
    from gateloop.training.checkpoint import trained_model_dir

    source = Path(source)
    if (source / WEIGHTS_NAME).is_file():
        run = source.parent.parent if source.parent.name == "checkpoints" else source.parent
        is_run = (run / CONFIG_NAME).is_file() and "task" in json.loads((run / CONFIG_NAME).read_text())
        return source, run if is_run else None
    if "task" in _read_config(source, "a gateloop run or model directory"):
        return trained_model_dir(source), source
    raise FileNotFoundError(
        f"{source / WEIGHTS_NAME} not found: {source} is not a gateloop run or model directory"
    )


def native_to_hf(source: str | Path, out: str | Path, *, tokenizer: bool = True) -> Path:
    """Write the Hugging Face form of a gateloop run / checkpoint ``source`` into ``out``.

    With ``tokenizer`` and a language-model run, the run's tokenizer (bpe, gpt2 or bytes) goes
    beside the model as tokenizer.json (a warning, and the model alone, if it cannot be built); the
    config records the run's tokenizer spec as ``gateloop_tokenizer`` and its end-of-text id as
    ``eos_token_id`` / ``pad_token_id``. ValueError when the model's vocabulary is not the
    tokenizer's. Returns ``out``.
    """
    from safetensors.torch import load_file, save_file

    model_dir, run_dir = resolve_model_dir(source)
    saved = _read_config(model_dir, "a gateloop model directory")
    model_type = saved.get("model_type")
    if model_type not in HF_CONFIGS:  # the model registry's types that have a Hugging Face form
        raise ValueError(
            f"{model_dir / CONFIG_NAME} has model_type {model_type!r}; expected one of {sorted(HF_CONFIGS)}"
        )
    native = config_class(model_type).from_dict(saved)
    spec, dataset_dir = _run_tokenizer(run_dir)
    if spec is not None and spec.get("vocab_size") != native.vocab_size:
        raise ValueError(
            f"{model_dir} has vocab_size {native.vocab_size}, but its run's tokenizer ({spec.get('name')}) "
            f"has {spec.get('vocab_size')}: the model and the run's data do not belong together"
        )
    extra: dict[str, Any] = {"architectures": [_architecture(model_type)]}
    if spec is not None:
        eot = spec.get("eot_id")
        extra.update(gateloop_tokenizer=spec, eos_token_id=eot, bos_token_id=eot, pad_token_id=eot)
    hf_config = HF_CONFIGS[model_type].from_native(native, **extra)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(model_dir / WEIGHTS_NAME))
    renamed = {PREFIX + name: t for name, t in weights.items()}
    save_file(renamed, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    hf_config.save_pretrained(str(out))
    write_auto_map(out, model_type)
    if tokenizer and spec is not None and dataset_dir is not None:
        from gateloop.hf.tokenizer import save_hf_tokenizer

        try:
            save_hf_tokenizer(spec, dataset_dir, out)
        except OSError as e:  # the dataset's BPE file gone, GPT-2's ranks file unreachable
            warnings.warn(f"{e}; wrote the model without its tokenizer", RuntimeWarning, stacklevel=2)
    return out


# the "remote code" of a converted directory: our classes, from the installed gateloop package
AUTO_MODULE = "gateloop_auto"
AUTO_NAMES = sorted(name for m in HF_MODELS.values() for name in (m.__name__, m.config_class.__name__))
AUTO_SOURCE = (
    '''"""Hugging Face "remote code" of a GateLoop model: the classes of the installed
gateloop package (pip install "gateloop[hf]"), so that tools which cannot `import gateloop.hf`
first (the lm_eval command) load this directory with trust_remote_code=True."""

from gateloop.hf import (  # noqa: F401
'''
    + "".join(f"    {name},\n" for name in AUTO_NAMES)
    + ")\n"
)


def write_auto_map(directory: Path, model_type: str) -> None:
    """Add ``gateloop_auto.py`` and an ``auto_map`` to ``directory/config.json``: with
    ``trust_remote_code=True`` the Auto classes find our classes without ``import gateloop.hf``."""
    (directory / f"{AUTO_MODULE}.py").write_text(AUTO_SOURCE)
    model_name = _architecture(model_type)
    config_name = HF_CONFIGS[model_type].__name__
    path = directory / CONFIG_NAME
    saved = json.loads(path.read_text())
    saved["auto_map"] = {
        "AutoConfig": f"{AUTO_MODULE}.{config_name}",
        "AutoModelForCausalLM": f"{AUTO_MODULE}.{model_name}",
    }
    path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def hf_to_native(source: str | Path, out: str | Path) -> Path:
    """Write gateloop's checkpoint layout (``GateLoopLM.from_pretrained``-able) of the Hugging Face
    directory ``source`` (from ``native_to_hf`` or ``GateLoopForCausalLM.save_pretrained``)."""
    from safetensors.torch import save_file

    source = Path(source)
    saved = _read_config(source, "a Hugging Face GateLoop model directory")
    hf_config_class = check_hf_model_type(saved, source / CONFIG_NAME)
    native = hf_config_class.from_dict(saved).to_native()
    weights = _load_hf_weights(source)
    foreign = sorted(name for name in weights if not name.startswith(PREFIX))
    if foreign:
        raise ValueError(f"{source} holds tensors outside {PREFIX!r}: {foreign[:5]}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    native.save(out / CONFIG_NAME)
    metadata = {"format": "pt", "model_type": native.model_type}
    renamed = {name[len(PREFIX) :]: t for name, t in weights.items()}
    save_file(renamed, str(out / WEIGHTS_NAME), metadata=metadata)
    return out


def check_hf_model_type(saved: dict[str, Any], path: Path) -> type[_NativeBackedConfig]:
    """The HF config class for a config.json's ``model_type``; ValueError naming the file otherwise."""
    model_type = saved.get("model_type")
    if model_type not in BY_HF_TYPE:
        raise ValueError(
            f"{path} has model_type {model_type!r}: not a GateLoop model "
            f"(expected one of {sorted(BY_HF_TYPE)})"
        )
    return BY_HF_TYPE[model_type]


def _load_hf_weights(directory: Path) -> dict[str, Any]:
    """Every tensor of a HF directory: one model.safetensors, or the shards its index names."""
    from safetensors.torch import load_file

    index = directory / f"{WEIGHTS_NAME}.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(str(directory / shard)).items()}
    if not (directory / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{directory / WEIGHTS_NAME} not found (nor a sharded index)")
    return load_file(str(directory / WEIGHTS_NAME))


def _run_tokenizer(run_dir: Path | None) -> tuple[dict[str, Any] | None, Path | None]:
    """(tokenizer spec, dataset directory) recorded by an LM run; (None, None) otherwise."""
    if run_dir is None:
        return None, None
    run = json.loads((run_dir / CONFIG_NAME).read_text())
    spec = run.get("resolved", {}).get("tokenizer")
    if spec is None:
        return None, None
    return dict(spec), Path(run.get("data", {}).get("path", ""))


def _architecture(model_type: str) -> str:
    """The HF causal-LM class name of our ``model_type`` (what ``architectures`` records)."""
    return HF_MODELS[model_type].__name__
