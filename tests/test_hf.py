"""Hugging Face interop (the [hf] extra): the HF classes compute what our models compute, HF
``generate`` decodes as ours does, directories round-trip, runs convert both ways bit-identically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.generation.streamers import BaseStreamer  # noqa: E402

import gateloop.hf  # noqa: E402
from gateloop.data.tokenizers import BPETokenizer  # noqa: E402
from gateloop.hf.convert import hf_to_native, native_to_hf  # noqa: E402
from gateloop.models import GateLoopConfig, GateLoopLM, TransformerConfig, TransformerLM  # noqa: E402

from helpers import assert_close  # noqa: E402

SOTU = Path(__file__).parent / "data" / "sotu"
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


def _hf_model(config_cls, hf_config_cls, hf_cls, **overrides):
    """A tiny HF-wrapped model in float64 (seeded), and its own native model."""
    torch.manual_seed(0)
    model = hf_cls(hf_config_cls.from_native(config_cls.tiny(**overrides))).to(torch.float64).eval()
    return model, model.model


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_logits_and_loss_equal_our_model(config_cls, hf_config_cls, hf_cls) -> None:
    model, native = _hf_model(config_cls, hf_config_cls, hf_cls, tie_embeddings=True)
    ids = torch.randint(0, 97, (2, 13))
    out = model(ids, labels=ids)
    assert_close("logits", native(ids), out.logits, 1e-10)
    expected = torch.nn.functional.cross_entropy(native(ids)[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    assert_close("loss", expected, out.loss, 1e-6)  # transformers' loss upcasts to float32 only
    assert model(ids, logits_to_keep=1).logits.shape == (2, 1, 97)


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_activation_checkpointing_enable_recomputes_blocks_with_equal_gradients(
    config_cls, hf_config_cls, hf_cls
) -> None:
    """transformers' activation_checkpointing_enable (every_n_layers too) and _disable drive our
    per-block checkpointing: each checkpointed block runs twice per step, gradients are unchanged."""
    model, native = _hf_model(config_cls, hf_config_cls, hf_cls, n_layer=4)
    model.train()
    ids = torch.randint(0, 97, (2, 13))
    calls = [0] * len(native.blocks)
    for i, block in enumerate(native.blocks):  # (the recomputation calls block.forward, not the hooks)
        block.time_mixing.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))

    def step() -> list[torch.Tensor]:
        model.zero_grad()
        calls[:] = [0] * len(calls)
        model(ids, labels=ids).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = step()
    assert calls == [1, 1, 1, 1] and not model.is_activation_checkpointing
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    for got, want in zip(step(), plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert calls == [2, 2, 2, 2]
    model.activation_checkpointing_enable(every_n_layers=2)
    step()
    assert calls == [2, 1, 2, 1]
    model.activation_checkpointing_disable()
    step()
    assert calls == [1, 1, 1, 1] and not model.is_activation_checkpointing


def test_every_gateloop_option_survives_the_hf_config(tmp_path) -> None:
    config = GateLoopConfig.tiny(
        magnitude_activation="exp_exp",
        phase_activation="exp",
        per_head_transition=True,
        magnitude_init=(0.5, 0.7),
        output_gate=True,
        group_norm=True,
        norm_position="post",
        chunk_size=8,
        d_qk=16,
    )
    gateloop.hf.GateLoopHFConfig.from_native(config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["hidden_size"], saved["num_hidden_layers"], saved["intermediate_size"]) == (32, 2, 64)
    assert (saved["num_attention_heads"], saved["model_type"]) == (4, "gateloop")
    assert gateloop.hf.GateLoopHFConfig.from_pretrained(tmp_path).to_native() == config


class _Collect(BaseStreamer):
    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def put(self, value: torch.Tensor) -> None:
        self.chunks.append(value.flatten().tolist())

    def end(self) -> None:
        self.chunks.append([])


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_greedy_generate_equals_ours(config_cls, hf_config_cls, hf_cls) -> None:
    model, native = _hf_model(config_cls, hf_config_cls, hf_cls)
    prompt = torch.randint(0, 97, (2, 6))
    ours = native.generate(prompt, 7, temperature=0)
    assert torch.equal(model.generate(prompt, max_new_tokens=7, do_sample=False), ours)
    eos = int(ours[0, 8])  # row 0 stops after its third new token
    stopped = model.generate(prompt, max_new_tokens=7, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    assert torch.equal(
        stopped, native.generate(prompt, 7, temperature=0, eos_token_id=eos)[:, : stopped.shape[1]]
    )
    streamer = _Collect()
    model.generate(prompt[:1], max_new_tokens=4, do_sample=False, streamer=streamer)
    streamed = [token for chunk in streamer.chunks[1:] for token in chunk]  # chunk 0 is the prompt
    assert streamed == ours[0, 6:10].tolist()


def test_sampling_options_run_and_top_k_1_is_greedy() -> None:
    model, native = _hf_model(GateLoopConfig, gateloop.hf.GateLoopHFConfig, gateloop.hf.GateLoopForCausalLM)
    prompt = torch.randint(0, 97, (3, 4))
    torch.manual_seed(1)
    a = model.generate(prompt, max_new_tokens=6, do_sample=True, top_k=5, top_p=0.9, temperature=0.7)
    torch.manual_seed(1)
    b = model.generate(prompt, max_new_tokens=6, do_sample=True, top_k=5, top_p=0.9, temperature=0.7)
    assert a.shape == (3, 10) and torch.equal(a, b)
    greedy = native.generate(prompt, 6, temperature=0)
    assert torch.equal(model.generate(prompt, max_new_tokens=6, do_sample=True, top_k=1), greedy)


@torch.no_grad()
def _brute_force_beam(native, prompt: torch.Tensor, new: int, beams: int) -> list[int]:
    """Beam search by full forwards (no cache): keep the ``beams`` best sums of log-probabilities."""
    hyps = [(0.0, prompt.tolist())]
    for _ in range(new):
        candidates = []
        for score, seq in hyps:
            logp = torch.log_softmax(native(torch.tensor([seq]))[0, -1].float(), dim=-1)
            candidates += [(score + float(logp[t]), [*seq, t]) for t in range(logp.numel())]
        hyps = sorted(candidates, key=lambda c: -c[0])[:beams]
    return hyps[0][1]


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_beam_search_equals_brute_force(config_cls, hf_config_cls, hf_cls) -> None:
    """Beam search reorders the cache by beam; the result is the brute-force beam's."""
    model, native = _hf_model(config_cls, hf_config_cls, hf_cls)
    prompt = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(4))
    out = model.generate(prompt, max_new_tokens=4, num_beams=3, do_sample=False)
    for row in range(2):
        assert out[row].tolist() == _brute_force_beam(native, prompt[row], 4, 3)


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_left_padded_batch_equals_rows_alone(config_cls, hf_config_cls, hf_cls) -> None:
    model, _ = _hf_model(config_cls, hf_config_cls, hf_cls)
    rows = [torch.randint(1, 97, (n,)) for n in (3, 7, 5)]
    ids = torch.stack([torch.cat([torch.zeros(7 - len(r), dtype=torch.long), r]) for r in rows])
    mask = torch.stack([torch.cat([torch.zeros(7 - len(r)), torch.ones(len(r))]).long() for r in rows])
    out = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
    for i, r in enumerate(rows):
        alone = model.generate(r[None], max_new_tokens=5, do_sample=False)[0, len(r) :]
        assert torch.equal(out[i, 7:], alone), f"row {i}"
    beams = model.generate(ids, attention_mask=mask, max_new_tokens=3, num_beams=2, pad_token_id=0)
    for i, r in enumerate(rows):
        alone = model.generate(r[None], max_new_tokens=3, num_beams=2)[0, len(r) :]
        assert torch.equal(beams[i, 7:], alone), f"beam row {i}"


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_right_padded_batch_equals_rows_alone(config_cls, hf_config_cls, hf_cls) -> None:
    """Right padding (``padding_side="right"``): generate appends after the pads; each row must
    continue from its own last real token (issue 26.3: rows 0 and 2 differed), greedy and beams."""
    model, _ = _hf_model(config_cls, hf_config_cls, hf_cls)
    rows = [torch.randint(1, 97, (n,), generator=torch.Generator().manual_seed(n)) for n in (3, 7, 5)]
    ids = torch.stack([torch.cat([r, torch.zeros(7 - len(r), dtype=torch.long)]) for r in rows])
    mask = torch.stack([torch.cat([torch.ones(len(r)), torch.zeros(7 - len(r))]).long() for r in rows])
    for beams in (1, 2):
        out = model.generate(ids, attention_mask=mask, max_new_tokens=6, num_beams=beams, do_sample=False,
                             pad_token_id=0)  # fmt: skip
        for i, r in enumerate(rows):
            alone = model.generate(r[None], max_new_tokens=6, num_beams=beams, do_sample=False)[0, len(r) :]
            assert torch.equal(out[i, 7:], alone), f"row {i}, {beams} beam(s)"
    with torch.no_grad():  # the forward: a trailing pad's logits are its row's last real token's
        logits = model(ids, attention_mask=mask, use_cache=False).logits
        for i, r in [(0, rows[0]), (2, rows[2])]:  # (row 1 has no padding)
            pads = logits[i, len(r) :]
            assert_close(f"row {i} pads", logits[i, len(r) - 1].expand_as(pads), pads, 1e-12)


@pytest.mark.parametrize(("config_cls", "hf_config_cls", "hf_cls"), PAIRS)
def test_save_then_auto_model_round_trip_and_bf16(tmp_path, config_cls, hf_config_cls, hf_cls) -> None:
    model, _ = _hf_model(config_cls, hf_config_cls, hf_cls)
    model.to(torch.float32).save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is hf_cls
    ids = torch.randint(0, 97, (2, 9))
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    half = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    logits = half(ids).logits.float()
    assert (logits - model(ids).logits).abs().max() < 0.1 * model(ids).logits.abs().max()


def _fake_run(tmp_path: Path, model, tokenizer=None) -> Path:
    """A run directory as `gateloop train lm` leaves it (config.json, final/) over a dataset made
    with ``tokenizer`` (default: a BPE of 300 ids trained here)."""
    data = tmp_path / "data"
    data.mkdir()
    if tokenizer is None:
        docs = [p.read_text() for p in sorted(SOTU.glob("*.txt"))[:3]]
        tokenizer = BPETokenizer.train(docs, 300)
        (data / "tokenizer.json").write_text(tokenizer.to_json())
    run = tmp_path / "run"
    model.save_pretrained(run / "final")
    config = {
        "task": "lm",
        "format": 2,
        "model": model.config.to_dict(),
        "data": {"path": str(data)},
        "resolved": {"tokenizer": tokenizer.spec()},
    }
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.mark.parametrize("native_cls", [GateLoopLM, TransformerLM], ids=["gateloop", "transformer"])
def test_convert_run_to_hf_and_back_bit_identical(tmp_path, native_cls) -> None:
    from safetensors.torch import load_file

    torch.manual_seed(0)
    config_cls = GateLoopConfig if native_cls is GateLoopLM else TransformerConfig
    native = native_cls(config_cls.tiny(vocab_size=300)).eval()
    run = _fake_run(tmp_path, native)
    hf_dir = native_to_hf(run, tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    ids = torch.randint(0, 300, (2, 8))
    assert torch.equal(model(ids).logits, native(ids))
    bpe = BPETokenizer.from_json((tmp_path / "data" / "tokenizer.json").read_text())
    assert model.config.eos_token_id == bpe.eot_id and model.config.gateloop_tokenizer["name"] == "bpe"
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    text = "Fellow-Citizens of the Senate and House of Representatives"
    assert tokenizer(text)["input_ids"] == bpe.encode(text) and tokenizer.eos_token == "<|endoftext|>"
    back = hf_to_native(hf_dir, tmp_path / "back")
    before, after = (
        load_file(str(run / "final" / "model.safetensors")),
        load_file(str(back / "model.safetensors")),
    )
    assert before.keys() == after.keys()
    assert all(before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]) for k in before)
    assert native_cls.from_pretrained(back).config == native.config
    # a checkpoint directory converts too, and an HF save_pretrained directory converts back
    model.save_pretrained(tmp_path / "saved")
    assert (
        native_cls.from_pretrained(hf_to_native(tmp_path / "saved", tmp_path / "back2")).config
        == native.config
    )


TOKENIZER_TEXTS = [
    "Fellow-Citizens of the Senate and House of Representatives",
    "  leading spaces,\ttabs and\nnew lines\n\n",
    "Ünïcödé — 日本語 🙂 it's we'll 12345 3.14",
]


def _gpt2_or_skip():
    from gateloop.data.tokenizers import GPT2Tokenizer

    try:
        return GPT2Tokenizer(try_hub=False)
    except (RuntimeError, OSError) as exc:  # no registry access to fetch the ranks file
        pytest.skip(f"GPT-2 ranks unavailable: {exc}")


@pytest.mark.parametrize("name", ["bytes", "gpt2"])
def test_converted_bytes_and_gpt2_runs_carry_an_equal_tokenizer(tmp_path, name) -> None:
    """AutoTokenizer on the converted directory gives our ids (and decodes back), offline."""
    from gateloop.data.tokenizers import ByteTokenizer

    ours = ByteTokenizer() if name == "bytes" else _gpt2_or_skip()
    native = GateLoopLM(GateLoopConfig.tiny(vocab_size=ours.vocab_size, d_model=8, n_head=2)).eval()
    hf_dir = native_to_hf(_fake_run(tmp_path, native, ours), tmp_path / "hf")
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    assert len(tokenizer) == ours.vocab_size and tokenizer.eos_token_id == ours.eot_id
    for text in TOKENIZER_TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert ids == ours.encode(text), text
        assert tokenizer.decode(ids) == text
    assert tokenizer("a<|endoftext|>")["input_ids"][-1] == ours.eot_id  # HF's special-token rule


def test_convert_refuses_a_model_whose_vocab_is_not_its_tokenizers(tmp_path) -> None:
    from gateloop.data.tokenizers import ByteTokenizer

    native = GateLoopLM(GateLoopConfig.tiny(vocab_size=300))
    with pytest.raises(ValueError, match=r"vocab_size 300, but its run's tokenizer \(bytes\) has 257"):
        native_to_hf(_fake_run(tmp_path, native, ByteTokenizer()), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_bad_directories_and_versions_are_named(tmp_path) -> None:
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    with pytest.raises(
        ValueError, match=r"gpt2/config\.json has model_type 'gpt2': not a GateLoopForCausalLM"
    ):
        gateloop.hf.GateLoopForCausalLM.from_pretrained(gpt2)
    with pytest.raises(ValueError, match=r"gpt2/config\.json has model_type 'gpt2': not a GateLoop model"):
        hf_to_native(gpt2, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"missing/config\.json not found|missing is not a directory"):
        hf_to_native(tmp_path / "missing", tmp_path / "out")
    GateLoopLM(GateLoopConfig.tiny()).save_pretrained(tmp_path / "native")
    with pytest.raises(ValueError, match=r"gateloop's own checkpoint layout .* `gateloop convert to-hf"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "native")
    newer = tmp_path / "newer"
    gateloop.hf.GateLoopHFConfig.from_native(GateLoopConfig.tiny()).save_pretrained(newer)
    saved = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**saved, "gateloop_format": 99}))
    with pytest.raises(ValueError, match="gateloop_format 99; this gateloop reads format 1"):
        AutoModelForCausalLM.from_pretrained(newer)
    (newer / "config.json").write_text(json.dumps({**saved, "mode": "fastest"}))
    with pytest.raises(ValueError, match="mode must be one of"):
        AutoModelForCausalLM.from_pretrained(newer)


def test_beam_search_with_sampling_options_is_refused() -> None:
    model, _ = _hf_model(GateLoopConfig, gateloop.hf.GateLoopHFConfig, gateloop.hf.GateLoopForCausalLM)
    prompt = torch.randint(0, 97, (1, 4))
    with pytest.raises(
        ValueError, match=r"num_beams=3 without do_sample=True is beam search, which ignores top_p=0\.9"
    ):
        model.generate(prompt, max_new_tokens=2, num_beams=3, top_p=0.9)
    assert model.generate(prompt, max_new_tokens=2, num_beams=3, do_sample=True, top_p=0.9).shape == (1, 6)


def test_conversion_writes_a_generation_config_and_a_tokenizer_that_needs_no_code(tmp_path) -> None:
    """generation_config.json carries the end-of-text ids, as a model's save_pretrained writes it;
    the tokenizer is a plain fast tokenizer: it loads in a process that never imports gateloop,
    declining remote code (stdin closed: a prompt would fail), with our ids."""
    import subprocess
    import sys

    from transformers import GenerationConfig

    from gateloop.data.tokenizers import ByteTokenizer

    ours = ByteTokenizer()
    native = GateLoopLM(GateLoopConfig.tiny(vocab_size=ours.vocab_size, d_model=8, n_head=2)).eval()
    hf_dir = native_to_hf(_fake_run(tmp_path, native, ours), tmp_path / "hf")
    generation = GenerationConfig.from_pretrained(hf_dir)
    assert (generation.eos_token_id, generation.pad_token_id) == (ours.eot_id, ours.eot_id)
    script = (
        "import sys; from transformers import AutoTokenizer\n"
        f"t = AutoTokenizer.from_pretrained({str(hf_dir)!r}, trust_remote_code=False)\n"
        "print(t('hi there')['input_ids']); assert 'gateloop' not in sys.modules"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(ours.encode("hi there"))


def test_remote_code_without_our_package_names_the_distribution(tmp_path) -> None:
    """gateloop_auto.py where gateloop is not installed: an ImportError naming gateloop-torch (not
    transformers' hint to pip install PyPI's unrelated "gateloop", which its import check would
    give: the import sits in try/except, which that check skips)."""
    import sys

    from transformers.dynamic_module_utils import get_imports

    from gateloop.hf.convert import AUTO_SOURCE

    path = tmp_path / "gateloop_auto.py"
    path.write_text(AUTO_SOURCE)
    assert get_imports(str(path)) == []
    blocked = {name: None for name in ("gateloop", "gateloop.hf")}  # None in sys.modules: not importable
    saved = {name: sys.modules.get(name) for name in blocked}
    sys.modules.update(blocked)
    try:
        with pytest.raises(ImportError, match=r'pip install "gateloop-torch\[hf\]"'):
            exec(compile(AUTO_SOURCE, str(path), "exec"), {})
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
