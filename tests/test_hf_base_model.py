"""Issue 26 item 2: the Hugging Face base model (AutoModel), every layer's hidden states
(output_hidden_states) and inputs_embeds, for both model classes, each against our own model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoModel, AutoModelForCausalLM

import gateloop.hf
from gateloop.hf.convert import native_to_hf
from gateloop.models import GateLoopConfig, TransformerConfig

from helpers import assert_close

PAIRS = [
    pytest.param(
        GateLoopConfig, gateloop.hf.GateLoopHFConfig, gateloop.hf.GateLoopForCausalLM, id="gateloop"
    ),
    pytest.param(
        TransformerConfig,
        gateloop.hf.GateLoopTransformerHFConfig,
        gateloop.hf.GateLoopTransformerForCausalLM,
        id="transformer",
    ),
]
BASE = {"gateloop": gateloop.hf.GateLoopModel, "transformer": gateloop.hf.GateLoopTransformerModel}


def _model(config_cls, hf_config_cls, hf_cls, **overrides):
    torch.manual_seed(0)
    model = (
        hf_cls(hf_config_cls.from_native(config_cls.tiny(n_layer=3, **overrides))).to(torch.float64).eval()
    )
    return model, model.model


def _by_hand(native, ids: torch.Tensor) -> list[torch.Tensor]:
    """Embeddings, each block's output, the final norm's: our model's blocks run one by one."""
    x = native.embed(ids)
    layers = [x]
    for block in native.blocks:
        x = block(x)
        layers.append(x)
    layers[-1] = native.final_norm(x)
    return layers


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_output_hidden_states_are_every_layer(config_cls, hf_config_cls, hf_cls) -> None:
    model, native = _model(config_cls, hf_config_cls, hf_cls)
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        expected = _by_hand(native, ids)
        assert out.hidden_states is not None and len(out.hidden_states) == native.config.n_layer + 1
        for i, (want, got) in enumerate(zip(expected, out.hidden_states, strict=True)):
            assert_close(f"hidden_states[{i}]", want, got, 1e-12)
        assert_close("logits", native(ids), out.logits, 1e-12)
        assert model(ids).hidden_states is None  # only when asked (or config.output_hidden_states)
        model.config.output_hidden_states = True
        assert len(model(ids).hidden_states) == native.config.n_layer + 1


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_inputs_embeds_equal_input_ids(config_cls, hf_config_cls, hf_cls) -> None:
    model, native = _model(config_cls, hf_config_cls, hf_cls)
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        embeds = native.embed(ids)
        assert_close("logits", model(ids).logits, model(inputs_embeds=embeds).logits, 1e-12)
        mask = torch.ones(2, 9, dtype=torch.long)
        mask[0, :3] = 0  # left padding
        assert_close(
            "logits (masked)",
            model(ids, attention_mask=mask).logits,
            model(inputs_embeds=embeds, attention_mask=mask).logits,
            1e-12,
        )
    loss = model(inputs_embeds=embeds.detach().requires_grad_(), labels=ids).loss
    loss.backward()  # prompt tuning: the gradient reaches the embeddings given
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(ids, inputs_embeds=embeds)
    with pytest.raises(ValueError, match=r"inputs_embeds must have shape \[B, L, d_model = 32\]"):
        model(inputs_embeds=embeds[..., :16])
    with pytest.raises(TypeError, match=r"inputs_embeds must have dtype torch\.float64"):
        model(inputs_embeds=embeds.float())


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_auto_model_loads_the_base_model(tmp_path, config_cls, hf_config_cls, hf_cls, request) -> None:
    """AutoModel on a causal LM's directory: the base model, every weight loaded (none "newly
    initialised"), last_hidden_state = our model's final hidden states; its cache and hidden states."""
    model, native = _model(config_cls, hf_config_cls, hf_cls)
    model.float().save_pretrained(tmp_path)
    base, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert type(base) is BASE[request.node.callspec.id]
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        out = base(ids, output_hidden_states=True)
        assert_close("last_hidden_state", native.float().hidden_states(ids)[0], out.last_hidden_state, 1e-6)
        assert len(out.hidden_states) == native.config.n_layer + 1
        # the cache continues: the last token through the cache of the first six = the full run
        first = base(ids[:, :6], use_cache=True)
        step = base(ids[:, 6:], cache=first.cache, use_cache=True)
        assert_close("cached step", out.last_hidden_state[:, 6:], step.last_hidden_state, 1e-5)
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path)) is hf_cls


def test_converted_directory_loads_with_automodel_remote_code(tmp_path) -> None:
    """The converted directory's auto_map names the base model too: AutoModel with
    trust_remote_code=True finds it without `import gateloop.hf` (a fresh interpreter)."""
    model, _ = _model(GateLoopConfig, gateloop.hf.GateLoopHFConfig, gateloop.hf.GateLoopForCausalLM)
    native_dir = tmp_path / "native"
    model.model.float().save_pretrained(native_dir)
    hf_dir = native_to_hf(native_dir, tmp_path / "hf")
    assert (
        json.loads((hf_dir / "config.json").read_text())["auto_map"]["AutoModel"]
        == "gateloop_auto.GateLoopModel"
    )
    code = (
        "from transformers import AutoModel; import sys;"
        f"m = AutoModel.from_pretrained({str(hf_dir)!r}, trust_remote_code=True);"
        "print(type(m).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("GateLoopModel")
