"""`convert to-hf` / `from-hf` on awkward directories (issue 27): to-hf over an older sharded save
leaves exactly one set of weights; from-hf refuses two sets, shard paths that leave the model
directory, and tensors the config does not describe, writing nothing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import gateloop.hf  # noqa: E402
from gateloop.hf.convert import hf_to_native, native_to_hf  # noqa: E402
from gateloop.models import GateLoopConfig, GateLoopLM  # noqa: E402

INDEX = "model.safetensors.index.json"
SHARD_SIZE = "20KB"  # the tiny model (~110 kB in float32) saves as 7 shards


def _hf_model(seed: int) -> gateloop.hf.GateLoopForCausalLM:
    torch.manual_seed(seed)
    return gateloop.hf.GateLoopForCausalLM(gateloop.hf.GateLoopHFConfig.from_native(GateLoopConfig.tiny()))


def _sharded(directory: Path, seed: int = 0) -> Path:
    _hf_model(seed).save_pretrained(directory, max_shard_size=SHARD_SIZE)
    assert (directory / INDEX).is_file()
    return directory


def _native(directory: Path, seed: int = 1) -> GateLoopLM:
    torch.manual_seed(seed)
    model = GateLoopLM(GateLoopConfig.tiny()).eval()
    model.save_pretrained(directory)
    return model


def weight_map_of(directory: Path) -> dict[str, str]:
    return json.loads((directory / INDEX).read_text())["weight_map"]


def _set_weight_map(directory: Path, weight_map: dict[str, str]) -> None:
    saved = json.loads((directory / INDEX).read_text())
    (directory / INDEX).write_text(json.dumps({**saved, "weight_map": weight_map}))


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ to-hf: one set of weights


def test_to_hf_over_an_older_sharded_save_leaves_only_the_new_weights(tmp_path) -> None:
    """The stale index and shards go: from-hf and AutoModelForCausalLM both read the new model."""
    out = _sharded(tmp_path / "hf")
    native = _native(tmp_path / "native")
    native_to_hf(tmp_path / "native", out)
    files = ["config.json", "gateloop_auto.py", "generation_config.json", "model.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == files
    back = hf_to_native(out, tmp_path / "back")
    _assert_same_tensors(load_file(str(back / "model.safetensors")), native.state_dict())
    ids = torch.randint(0, 97, (2, 7))
    assert torch.equal(AutoModelForCausalLM.from_pretrained(out)(ids).logits, native(ids))


def test_to_hf_replaces_the_old_model_files_and_keeps_the_users(tmp_path) -> None:
    """A README.md / .git beside an earlier model stay; the old model's tokenizer does not (the new
    model has none), and the generation config is the new model's."""
    out = _sharded(tmp_path / "hf")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_text("{}")
    (out / "README.md").write_text("# my model\n")
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    _native(tmp_path / "native")
    native_to_hf(tmp_path / "native", out)
    assert sorted(p.name for p in out.iterdir()) == [
        ".git",
        "README.md",
        "config.json",
        "gateloop_auto.py",
        "generation_config.json",
        "model.safetensors",
    ]
    assert (out / "README.md").read_text() == "# my model\n" and (out / ".git" / "HEAD").is_file()
    assert not list(tmp_path.glob(".tmp_*"))  # no scratch directory left beside it


@pytest.mark.parametrize("kind", ["other files", "native model", "file"])
def test_to_hf_refuses_an_out_that_is_not_a_hugging_face_gateloop_directory(tmp_path, kind) -> None:
    _native(tmp_path / "native")
    out = tmp_path / "out"
    if kind == "other files":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif kind == "native model":
        _native(out, seed=2)
    else:
        out.write_text("mine")
    before = {p: p.read_bytes() for p in ([out] if out.is_file() else out.rglob("*"))}
    with pytest.raises((ValueError, NotADirectoryError), match=r"out.*expected a new, empty"):
        native_to_hf(tmp_path / "native", out)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(before) == sorted([out] if out.is_file() else out.rglob("*"))


def test_to_hf_refuses_native_weights_that_do_not_match_their_config(tmp_path) -> None:
    _native(tmp_path / "native")
    saved = json.loads((tmp_path / "native" / "config.json").read_text())
    (tmp_path / "native" / "config.json").write_text(json.dumps({**saved, "d_model": 64}))
    with pytest.raises(ValueError, match=r"tensor 'embed\.weight' in .*model\.safetensors has shape"):
        native_to_hf(tmp_path / "native", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# ------------------------------------------------------------------ from-hf: refuse, write nothing


def test_from_hf_refuses_a_single_file_beside_a_sharded_set(tmp_path) -> None:
    model = _sharded(tmp_path / "hf")
    _hf_model(1).save_pretrained(tmp_path / "single")
    shutil.copy(tmp_path / "single" / "model.safetensors", model / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors and .*model\.safetensors\.index\.json"):
        hf_to_native(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_from_hf_reads_a_sharded_save(tmp_path) -> None:
    model = _sharded(tmp_path / "hf")
    back = hf_to_native(model, tmp_path / "out")
    _assert_same_tensors(load_file(str(back / "model.safetensors")), _hf_model(0).model.state_dict())


def _move_a_shard_outside(model: Path, outside: Path, how: str) -> None:
    """Put one shard's file in ``outside``, reached by a '..' entry, an absolute one or a symlink."""
    weight_map = weight_map_of(model)
    shard = sorted(set(weight_map.values()))[0]
    outside.mkdir()
    secret = outside / "secret.safetensors"
    shutil.move(model / shard, secret)
    if how == "symlink":
        (model / shard).symlink_to(secret)
        return
    entry = "../outside/secret.safetensors" if how == "dotdot" else str(secret.resolve())
    _set_weight_map(model, {k: entry if v == shard else v for k, v in weight_map.items()})


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_from_hf_refuses_shards_outside_the_model_directory(tmp_path, how) -> None:
    model = _sharded(tmp_path / "hf")
    _move_a_shard_outside(model, tmp_path / "outside", how)
    with pytest.raises(ValueError, match=r"outside|'\.\.'|absolute") as error:
        hf_to_native(model, tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_from_hf_follows_a_symlink_that_stays_inside(tmp_path) -> None:
    model = _sharded(tmp_path / "hf")
    shard = sorted(set(weight_map_of(model).values()))[0]
    (model / "blobs").mkdir()
    shutil.move(model / shard, model / "blobs" / shard)
    (model / shard).symlink_to(Path("blobs") / shard)
    back = hf_to_native(model, tmp_path / "out")
    _assert_same_tensors(load_file(str(back / "model.safetensors")), _hf_model(0).model.state_dict())


def _edit_single(model: Path, edit: str) -> None:
    """Break a single-file save: a wider config, an extra tensor, or a missing one."""
    if edit == "shape":
        saved = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**saved, "hidden_size": 64}))
        return
    weights = load_file(str(model / "model.safetensors"))
    if edit == "unknown":
        weights["model.extra.weight"] = torch.zeros(3, 5)
    else:
        del weights["model.final_norm.weight"]
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})


EDITS = {
    "shape": r"tensor 'model\.embed\.weight' in .*hf/model\.safetensors has shape \(97, 32\), but "
    r".*config\.json gives \(97, 64\)",
    "unknown": r"tensor 'model\.extra\.weight' in .*hf/model\.safetensors has shape \(3, 5\), but "
    r".*config\.json describes no such tensor",
    "missing": r"tensor 'model\.final_norm\.weight' \(shape \(32,\) in .*config\.json\) is missing "
    r"from .*hf/model\.safetensors",
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_from_hf_checks_names_and_shapes_against_the_config(tmp_path, edit) -> None:
    model = tmp_path / "hf"
    _hf_model(0).save_pretrained(model)
    _edit_single(model, edit)
    with pytest.raises(ValueError, match=EDITS[edit]) as error:
        hf_to_native(model, tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_from_hf_names_the_shard_of_a_wrong_shape(tmp_path) -> None:
    model = _sharded(tmp_path / "hf")
    name = "model.embed.weight"
    shard = model / weight_map_of(model)[name]
    weights = load_file(str(shard))
    weights[name] = weights[name][:, :16].contiguous()
    save_file(weights, str(shard), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"'{name}' in .*{shard.name} has shape \(97, 16\), but"):
        hf_to_native(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_from_hf_refuses_an_index_that_misplaces_a_tensor(tmp_path) -> None:
    """The index must say where each tensor is: a reader that trusts it would find another."""
    model = _sharded(tmp_path / "hf")
    weight_map = weight_map_of(model)
    shards = sorted(set(weight_map.values()))
    name = next(k for k, v in weight_map.items() if v == shards[0])
    _set_weight_map(model, {**weight_map, name: shards[1]})
    with pytest.raises(ValueError, match=rf"names {shards[1]} for tensor '{name}'.*{shards[0]} holds it"):
        hf_to_native(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
