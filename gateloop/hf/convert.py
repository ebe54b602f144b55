"""Convert between gateloop's checkpoint layout and the Hugging Face one, weights bit-identical.

gateloop:     config.json (our ``GateLoopConfig`` / ``TransformerConfig``) + model.safetensors
              (``embed.weight``, ``blocks.0...``), in a run's ``final/`` or ``checkpoints/step_*/``
Hugging Face: config.json (``GateLoopHFConfig``: model_type "gateloop") + model.safetensors
              (``model.embed.weight``, ...) [+ tokenizer.json]; ``AutoModelForCausalLM`` loads it
              after ``import gateloop.hf``.

Only names change; every tensor is copied as stored (same dtype, same bits). Both directions check
every tensor's name and shape against the config before writing; ``native_to_hf`` leaves exactly
one set of weights in its ``out``, ``hf_to_native`` refuses a directory holding two, or an index
naming a shard outside the directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

from gateloop.file_errors import DiskFullError, read_json_object, writing
from gateloop.hf.configuration import HF_CONFIGS, _NativeBackedConfig
from gateloop.hf.modeling import HF_BASE_MODELS, HF_MODELS
from gateloop.hf.weight_files import INDEX_NAME, check_index, check_tensors, hf_weight_files, tensor_shapes
from gateloop.models.config import ModelConfig
from gateloop.models.pretrained import CONFIG_NAME, WEIGHTS_NAME
from gateloop.models.registry import config_class
from gateloop.models.weight_file import read_weights, save_weights
from gateloop.training.checkpoint import read_config_json, resolve_model_dir
from gateloop.training.files import TMP_PREFIX, fsync_path, publish_dir

PREFIX = "model."  # the HF classes hold our model as ``self.model``
# the HF config classes by their own model_type ("gateloop_transformer"), as an HF config.json names it
BY_HF_TYPE: dict[str, type[_NativeBackedConfig]] = {c.model_type: c for c in HF_CONFIGS.values()}


def native_to_hf(source: str | Path, out: str | Path, *, tokenizer: bool = True) -> Path:
    """Write the Hugging Face form of a gateloop run / checkpoint ``source`` into ``out``.

    With ``tokenizer`` and a language-model run, the run's tokenizer (bpe, gpt2 or bytes) goes
    beside the model as tokenizer.json (a warning, and the model alone, if it cannot be built); the
    config records the run's tokenizer spec as ``gateloop_tokenizer`` and its end-of-text id as
    ``eos_token_id`` / ``pad_token_id``. ValueError when the model's vocabulary is not the
    tokenizer's, or its weights are not the ones its config describes. Returns ``out``.

    ``out`` must be new, empty, or a Hugging Face GateLoop directory (an earlier conversion, a
    ``save_pretrained``): its model files (weights in any layout, config, tokenizer) are all
    replaced, so no weights of the old model stay beside the new; other files (a README.md, a .git)
    are kept. Everything is written beside ``out`` first: a failure while writing leaves ``out`` as
    it was.
    """
    model_dir, run_dir = resolve_model_dir(source)
    saved = read_config_json(model_dir, "a gateloop model directory")
    model_type = saved.get("model_type")
    if model_type not in HF_CONFIGS:  # the model registry's types that have a Hugging Face form
        raise ValueError(
            f"{model_dir / CONFIG_NAME} has model_type {model_type!r}; expected one of {sorted(HF_CONFIGS)}"
        )
    native = config_class(model_type).from_dict(saved)
    weights_path = model_dir / WEIGHTS_NAME
    check_tensors(tensor_shapes([weights_path]), native, "", model_dir / CONFIG_NAME, weights_path)
    hf_config, spec, dataset_dir = _hf_config(native, model_dir, run_dir)
    out = Path(out)
    target = out.resolve()  # a symlink to a directory: that directory is the one written, the link stays
    _check_out_dir(target)
    scratch = _scratch_dir(target)
    try:
        with writing(target):  # a full disk: one error naming out
            weights = read_weights(weights_path)
            renamed = {PREFIX + name: t for name, t in weights.items()}
            save_weights(renamed, scratch / WEIGHTS_NAME, {"format": "pt"})
            hf_config.save_pretrained(str(scratch))
            _generation_config(hf_config).save_pretrained(str(scratch))  # as a model's save_pretrained
            write_auto_map(scratch, model_type)
            if tokenizer and spec is not None and dataset_dir is not None:
                from gateloop.hf.tokenizer import save_hf_tokenizer

                try:
                    with writing(target):
                        save_hf_tokenizer(spec, dataset_dir, scratch)
                except DiskFullError:  # no tokenizer for want of space: an error, not a warning
                    raise
                except OSError as e:  # the dataset's BPE file gone, GPT-2's ranks file unreachable
                    warnings.warn(f"{e}; wrote the model without its tokenizer", RuntimeWarning, stacklevel=2)
            _publish_hf_dir(scratch, target)
    finally:
        if scratch.exists():  # a failure before publishing (after it, nothing is left there)
            shutil.rmtree(scratch)
    return out


def _hf_config(
    native: ModelConfig, model_dir: Path, run_dir: Path | None
) -> tuple[Any, dict[str, Any] | None, Path | None]:
    """The Hugging Face config of ``native``, with the run's tokenizer spec and end-of-text ids
    when the run has a tokenizer (whose vocabulary must be the model's), that spec and its
    dataset directory."""
    spec, dataset_dir = _run_tokenizer(run_dir)
    if spec is not None and spec.get("vocab_size") != native.vocab_size:
        raise ValueError(
            f"{model_dir} has vocab_size {native.vocab_size}, but its run's tokenizer ({spec.get('name')}) "
            f"has {spec.get('vocab_size')}: the model and the run's data do not belong together"
        )
    extra: dict[str, Any] = {"architectures": [_architecture(native.model_type)]}
    if spec is not None:
        eot = spec.get("eot_id")
        extra.update(gateloop_tokenizer=spec, eos_token_id=eot, bos_token_id=eot, pad_token_id=eot)
    return HF_CONFIGS[native.model_type].from_native(native, **extra), spec, dataset_dir


def _check_out_dir(out: Path) -> None:
    """ValueError unless ``out`` is new, empty, or a Hugging Face GateLoop directory (the only kind
    whose model files a conversion may replace: anything else would be mixed with our files)."""
    # imported here: harness imports this module
    from gateloop.hf.harness import is_hf_dir

    expected = "expected a new, empty or Hugging Face GateLoop directory"
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out {out} is a file; {expected}")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        ours = is_hf_dir(out)
    except ValueError:  # config.json is not JSON: not ours either
        ours = False
    if not ours:
        raise ValueError(
            f"out {out} is not empty and not a Hugging Face GateLoop directory (no {CONFIG_NAME} with "
            f"model_type one of {sorted(BY_HF_TYPE)}); {expected}"
        )


def _scratch_dir(out: Path) -> Path:
    """A new directory beside ``out`` to write into (a ``TMP_PREFIX`` name: ``sweep_leftovers`` and
    a reader know it for a leftover; unique, so two conversions never share one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.with_name(f"{TMP_PREFIX}{out.name}.{uuid.uuid4().hex[:12]}")
    scratch.mkdir()
    return scratch


def _publish_hf_dir(scratch: Path, out: Path) -> None:
    """Make the written ``scratch`` the model in ``out``: the whole directory, swapped in at once,
    when ``out`` holds nothing else; else ``out``'s model files go and the new ones move in beside
    the files kept (a README.md, a .git)."""
    old = _model_files(out) if out.is_dir() else []
    kept = [p for p in out.iterdir() if p not in old] if out.is_dir() else []
    if not kept:
        publish_dir(scratch, out)
        return
    for path in old:  # any index first: an interrupted removal never leaves an index naming gone shards
        path.unlink()
    # the config last: until it arrives, the directory is no loadable model, never a mixed one
    for path in sorted(scratch.iterdir(), key=lambda p: p.name == CONFIG_NAME):
        fsync_path(path)
        os.replace(path, out / path.name)
    fsync_path(out)
    scratch.rmdir()


def _model_files(directory: Path) -> list[Path]:
    """The files of the model in an HF ``directory`` (weights, config, tokenizer), indexes first."""
    found = [
        p
        for p in directory.iterdir()
        if (p.is_file() or p.is_symlink()) and (p.name in HF_MODEL_FILES or WEIGHT_FILE.fullmatch(p.name))
    ]
    return sorted(found, key=lambda p: (not p.name.endswith(".index.json"), p.name))


# the "remote code" of a converted directory: our classes, from the installed gateloop package
AUTO_MODULE = "gateloop_auto"
AUTO_NAMES = sorted(
    {
        name
        for m in (*HF_MODELS.values(), *HF_BASE_MODELS.values())
        for name in (m.__name__, m.config_class.__name__)
    }
)
AUTO_SOURCE = (
    '''"""Hugging Face "remote code" of a GateLoop model: the classes of the installed gateloop
package (the gateloop-torch distribution: pip install "gateloop-torch[hf]"), so that tools which
cannot `import gateloop.hf` first (the lm_eval command) load this directory with
trust_remote_code=True. The import sits in try/except, which transformers' import check skips,
so a missing package is this message and not a hint to install PyPI's unrelated "gateloop"."""

try:
    from gateloop.hf import (  # noqa: F401
'''
    + "".join(f"        {name},\n" for name in AUTO_NAMES)
    + """    )
except ImportError as error:
    raise ImportError(
        "this model needs the gateloop-torch package with its Hugging Face extra: "
        'pip install "gateloop-torch[hf]" (not "gateloop", an unrelated project)'
    ) from error
"""
)

# what a conversion or ``save_pretrained`` writes beside the weights; in an ``out`` converted into
# again each is replaced, or removed when the new model has none (an old tokenizer must not stay)
HF_MODEL_FILES = frozenset(
    {
        CONFIG_NAME,
        "generation_config.json",
        f"{AUTO_MODULE}.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    }
)
# the weights in every layout transformers loads (single file or shards + index; safetensors or
# pickle), with the shard names transformers' save_pretrained writes and itself cleans up
WEIGHT_FILE = re.compile(r"(model|pytorch_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)(\.index\.json)?")


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
        "AutoModel": f"{AUTO_MODULE}.{HF_BASE_MODELS[model_type].__name__}",
    }
    path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def hf_to_native(source: str | Path, out: str | Path) -> Path:
    """Write gateloop's checkpoint layout (``GateLoopLM.from_pretrained``-able) of the Hugging Face
    directory ``source`` (from ``native_to_hf`` or ``GateLoopForCausalLM.save_pretrained``).

    Everything is checked before anything is written: one set of weights (model.safetensors, or the
    shards its index names, each inside ``source``), holding exactly the tensors the config
    describes, of its shapes. ValueError naming the tensor and the file otherwise.
    """
    source = Path(source)
    saved = read_config_json(source, "a Hugging Face GateLoop model directory")
    hf_config_class = check_hf_model_type(saved, source / CONFIG_NAME)
    native = hf_config_class.from_dict(saved).to_native()
    files, listed = hf_weight_files(source)
    found = tensor_shapes(files)
    if listed is not None:
        check_index(listed, found, source)
    where = source / INDEX_NAME if listed is not None else files[0]
    check_tensors(found, native, PREFIX, source / CONFIG_NAME, where)
    weights = {name: t for path in files for name, t in read_weights(path).items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with writing(out):  # a full disk: one error naming out
        native.save(out / CONFIG_NAME)
        metadata = {"format": "pt", "model_type": native.model_type}
        renamed = {name[len(PREFIX) :]: t for name, t in weights.items()}
        save_weights(renamed, out / WEIGHTS_NAME, metadata)  # the same bytes for the same weights
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


def _run_tokenizer(run_dir: Path | None) -> tuple[dict[str, Any] | None, Path | None]:
    """(tokenizer spec, dataset directory) recorded by an LM run; (None, None) otherwise."""
    if run_dir is None:
        return None, None
    run = read_json_object(run_dir / CONFIG_NAME, "a run config")
    spec = run.get("resolved", {}).get("tokenizer")
    if spec is None:
        return None, None
    return dict(spec), Path(run.get("data", {}).get("path", ""))


def _architecture(model_type: str) -> str:
    """The HF causal-LM class name of our ``model_type`` (what ``architectures`` records)."""
    return HF_MODELS[model_type].__name__


def _generation_config(hf_config: Any) -> Any:
    """``generation_config.json``'s contents: the config's end-of-text ids (what ``generate``
    stops on and pads with), as transformers derives them when it saves a model."""
    from transformers import GenerationConfig

    return GenerationConfig.from_model_config(hf_config)
