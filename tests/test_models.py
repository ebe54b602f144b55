"""Blocks, the GateLoop LM / tagger, the Transformer baseline, generation and checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from gateloop.models import (
    GateLoopConfig,
    GateLoopLM,
    RecurrentCache,
    TransformerConfig,
    TransformerLM,
    generate,
    load_weights,
    sample_next_token,
)

from helpers import assert_close

MODELS = [
    pytest.param(GateLoopLM, GateLoopConfig, id="gateloop"),
    pytest.param(TransformerLM, TransformerConfig, id="transformer"),
]


def _model(model_cls, config_cls, dtype=torch.float64, **overrides):
    torch.manual_seed(0)
    return model_cls(config_cls.tiny(**overrides)).to(dtype).eval()


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
@pytest.mark.parametrize("preset", ["tiny", "memory_horizon"])
def test_preset_shapes_and_dtypes(model_cls, config_cls, preset: str) -> None:
    config = getattr(config_cls, preset)()
    model = model_cls(config)
    ids = torch.randint(0, config.vocab_size, (2, 37))
    logits = model(ids)
    assert logits.shape == (2, 37, config.head_vocab_size) and logits.dtype == torch.float32
    assert model.to(torch.float64)(ids).dtype == torch.float64


def test_memory_horizon_preset_is_table_3() -> None:
    c = GateLoopConfig.memory_horizon()
    assert (c.n_layer, c.d_model, c.d_channel_mixing, c.d_qk, c.d_v, c.n_head) == (4, 64, 128, 64, 64, 64)
    assert (c.magnitude_activation, c.phase_activation) == ("sigmoid", "identity")
    assert (c.vocab_size, c.output_vocab_size) == (6, 50)


def test_wikitext_preset_parameter_count(capsys) -> None:
    """Paper Table 4 with an untied head: near the paper's 125M (counted on the meta device)."""
    with torch.device("meta"):
        model = GateLoopLM(GateLoopConfig.wikitext103_125m())
    n = model.num_parameters()
    print(f"GateLoopLM wikitext103_125m: {n:,} parameters")
    assert 115e6 < n < 130e6
    with torch.device("meta"):
        baseline = TransformerLM(TransformerConfig.wikitext103_125m())
    assert 120e6 < baseline.num_parameters() < 130e6


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_gradient_reaches_every_parameter(model_cls, config_cls, norm_position: str) -> None:
    model = _model(model_cls, config_cls, dtype=torch.float32, norm_position=norm_position)
    model.train()
    ids = torch.randint(0, 97, (2, 20))
    model(ids).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {name}"


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["f64", "f32"]
)
def test_prefill_plus_steps_equals_full_forward(model_cls, config_cls, dtype, tol) -> None:
    for seed in range(3):
        model = _model(model_cls, config_cls, dtype=dtype)
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, 97, (2, 30), generator=g)
        split = int(torch.randint(1, 29, (1,), generator=g))
        full = model(ids)
        logits, state = model(ids[:, :split], return_state=True)
        outs = [logits]
        for t in range(split, 30):
            logits, state = model(ids[:, t : t + 1], state=state, return_state=True)
            outs.append(logits)
        assert_close(f"seed {seed}", full, torch.cat(outs, dim=1), tol)


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
def test_greedy_generation_matches_argmax_of_full_forward(model_cls, config_cls) -> None:
    model = _model(model_cls, config_cls)
    prompt = torch.randint(0, 97, (2, 8))
    out = model.generate(prompt, 6, temperature=0)
    assert out.shape == (2, 14) and torch.equal(out[:, :8], prompt)
    logits = model(out[:, :-1])
    assert torch.equal(logits[:, 7:].argmax(-1), out[:, 8:])


def test_generation_eos_and_sampling_reproducible() -> None:
    model = _model(GateLoopLM, GateLoopConfig)
    prompt = torch.randint(0, 97, (3, 5))
    a = model.generate(prompt, 10, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 10, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    first = int(model.generate(prompt, 1, temperature=0)[0, -1])
    out = model.generate(prompt, 6, temperature=0, eos_token_id=first)
    assert (out[0, 5:] == first).all()


def test_sample_next_token_filters() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert int(sample_next_token(logits, temperature=0)) == 3
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next_token(logits, top_k=2, generator=g)) for _ in range(200)}
    assert draws == {2, 3}
    # top_p 0.5: token 3 alone has p = 0.64 >= 0.5, so it is the only candidate
    assert {int(sample_next_token(logits, top_p=0.5, generator=g)) for _ in range(50)} == {3}
    with pytest.raises(ValueError, match="top_p must be in"):
        sample_next_token(logits, top_p=0.0)


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
def test_left_and_right_padding_match_unpadded(model_cls, config_cls) -> None:
    model = _model(model_cls, config_cls)
    seqs = [torch.randint(0, 97, (n,)) for n in (9, 5, 7)]
    L = 9
    for side in ("left", "right"):
        rows, masks = [], []
        for s in seqs:
            pad = torch.zeros(L - len(s), dtype=torch.long)
            m_pad, m_real = torch.zeros(len(pad), dtype=torch.bool), torch.ones(len(s), dtype=torch.bool)
            rows.append(torch.cat([pad, s]) if side == "left" else torch.cat([s, pad]))
            masks.append(torch.cat([m_pad, m_real]) if side == "left" else torch.cat([m_real, m_pad]))
        logits = model(torch.stack(rows), attention_mask=torch.stack(masks))
        for i, s in enumerate(seqs):
            alone = model(s[None])[0]
            got = logits[i, L - len(s) :] if side == "left" else logits[i, : len(s)]
            assert_close(f"{side} row {i}", alone, got, 1e-10)


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
def test_left_padded_generation_matches_unpadded(model_cls, config_cls) -> None:
    model = _model(model_cls, config_cls)
    short, long = torch.randint(0, 97, (4,)), torch.randint(0, 97, (7,))
    batch = torch.stack([torch.cat([torch.zeros(3, dtype=torch.long), short]), long])
    mask = torch.stack([torch.tensor([False] * 3 + [True] * 4), torch.ones(7, dtype=torch.bool)])
    out = model.generate(batch, 5, temperature=0, attention_mask=mask)
    assert torch.equal(out[0, 3:], model.generate(short[None], 5, temperature=0)[0])
    assert torch.equal(out[1], model.generate(long[None], 5, temperature=0)[0])


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
def test_reordered_cache_continues_like_reordered_rows(model_cls, config_cls) -> None:
    """Beam search reorders every layer's state by row; decoding then goes on as if the reordered
    rows had been the prompt (rows repeated and dropped, left padding included)."""
    model = _model(model_cls, config_cls)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 97, (3, 6), generator=g)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, :2] = False  # row 1 is left-padded
    steps = torch.randint(0, 97, (3, 4), generator=g)
    index = torch.tensor([1, 2, 1])
    _, states = model(prompt, attention_mask=mask, return_state=True)
    cache = RecurrentCache(states, num_tokens=6).reorder(index)
    assert cache.batch_size == 3 and cache.num_tokens == 6
    _, fresh_states = model(prompt[index], attention_mask=mask[index], return_state=True)
    fresh = RecurrentCache(fresh_states, num_tokens=6)
    for t in range(steps.shape[1]):
        out, new_states = model(steps[:, t : t + 1], state=cache.states, return_state=True)
        cache.update(new_states, 1)
        ref, ref_states = model(steps[:, t : t + 1], state=fresh.states, return_state=True)
        fresh.update(ref_states, 1)
        assert_close(f"step {t}", ref, out, 1e-10)
    assert cache.num_tokens == 10
    with pytest.raises(ValueError, match=r"index must lie in \[0, 3\)"):
        cache.reorder(torch.tensor([3]))
    with pytest.raises(TypeError, match="index must have dtype"):
        cache.reorder(torch.tensor([0.0]))


def test_generate_function_is_the_method() -> None:
    model = _model(GateLoopLM, GateLoopConfig)
    prompt = torch.randint(0, 97, (2, 5))
    assert torch.equal(generate(model, prompt, 4, temperature=0), model.generate(prompt, 4, temperature=0))
    with pytest.raises(TypeError, match="max_new_tokens must be a non-negative int, got float"):
        model.generate(prompt, 2.0)
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative int, got -1"):
        model.generate(prompt, -1)


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
def test_packed_documents_match_separate_runs(model_cls, config_cls) -> None:
    model = _model(model_cls, config_cls)
    docs = [torch.randint(0, 97, (n,)) for n in (6, 4, 8)]
    packed = torch.cat(docs)[None]
    doc_ids = torch.cat([torch.full((len(d),), i) for i, d in enumerate(docs)])[None]
    logits = model(packed, document_ids=doc_ids)[0]
    start = 0
    for i, d in enumerate(docs):
        assert_close(f"doc {i}", model(d[None])[0], logits[start : start + len(d)], 1e-10)
        start += len(d)


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_save_load_round_trip(tmp_path, model_cls, config_cls, tie: bool) -> None:
    model = _model(model_cls, config_cls, dtype=torch.float32, tie_embeddings=tie)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == config_cls.model_type
    loaded = model_cls.from_pretrained(tmp_path)
    assert loaded.config == model.config
    ids = torch.randint(0, 97, (2, 11))
    assert torch.equal(model(ids), loaded.eval()(ids))


def test_identical_saves_are_identical_files(tmp_path) -> None:
    """safetensors writes its metadata from a hash map in random order (two saves of one model
    differed in raw bytes about half the time); ``save_pretrained`` sorts it: 8 saves, 1 file."""
    import hashlib

    from safetensors import safe_open

    model = _model(GateLoopLM, GateLoopConfig, dtype=torch.float32)
    digests = set()
    for i in range(8):
        model.save_pretrained(tmp_path / str(i))
        digests.add(hashlib.sha256((tmp_path / str(i) / "model.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
    with safe_open(str(tmp_path / "0" / "model.safetensors"), "pt") as f:  # still a valid file
        assert f.metadata() == {"format": "pt", "model_type": "gateloop"}
    assert torch.equal(GateLoopLM.from_pretrained(tmp_path / "0").embed.weight, model.embed.weight)


def test_load_mismatch_names_the_tensor(tmp_path) -> None:
    model = _model(GateLoopLM, GateLoopConfig, dtype=torch.float32)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["d_channel_mixing"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"tensor 'blocks\.0\.channel_mixing\.up\.weight' .* has shape \(64, 32\)"
    ):
        GateLoopLM.from_pretrained(tmp_path)
    config["d_channel_mixing"], config["n_layer"] = 64, 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing tensors \['blocks\.2"):
        GateLoopLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'gateloop', not 'transformer'"):
        TransformerLM.from_pretrained(tmp_path)


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
def test_load_weights_into_an_existing_model(tmp_path, model_cls, config_cls) -> None:
    source = _model(model_cls, config_cls, dtype=torch.float32)
    source.save_pretrained(tmp_path)
    torch.manual_seed(1)
    target = model_cls(config_cls.tiny()).eval()
    assert load_weights(target, tmp_path) is target
    ids = torch.randint(0, 97, (2, 7))
    assert torch.equal(source(ids), target(ids))


def test_load_weights_refuses_another_config(tmp_path) -> None:
    """The saved config.json must equal the model's config; the message names every differing field."""
    _model(GateLoopLM, GateLoopConfig, dtype=torch.float32).save_pretrained(tmp_path)
    other = GateLoopLM(GateLoopConfig.tiny(d_channel_mixing=32, phase_activation="none"))
    with pytest.raises(ValueError, match=r"config\.json does not match the model's config") as info:
        load_weights(other, tmp_path)
    message = str(info.value)
    assert "d_channel_mixing (saved 64, model 32)" in message
    assert "phase_activation (saved 'identity', model 'none')" in message
    assert "n_layer" not in message
    with pytest.raises(ValueError, match="model_type 'gateloop', not 'transformer'"):
        load_weights(TransformerLM(TransformerConfig.tiny()), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors not found"):
        load_weights(GateLoopLM(GateLoopConfig.tiny()), tmp_path)


def test_model_input_errors() -> None:
    model = _model(GateLoopLM, GateLoopConfig, dtype=torch.float32)
    with pytest.raises(
        ValueError, match="input_ids must lie in \\[0, vocab_size = 97\\), got values in \\[0, 97\\]"
    ):
        model(torch.tensor([[0, 97]]))
    with pytest.raises(ValueError, match="input_ids must have shape \\[B, L\\], got \\(5,\\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match=r"input_ids must have dtype torch\.int64.*; got torch\.float32"):
        model(torch.zeros(1, 5))
    with pytest.raises(TypeError, match=r"input_ids must be a torch\.Tensor, got list"):
        model([[0, 1]])
    with pytest.raises(ValueError, match=r"input_ids is empty \(shape \(1, 0\)\)"):
        model(torch.zeros(1, 0, dtype=torch.long))
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(TypeError, match=r"attention_mask must have dtype torch\.bool"):
        model(ids, attention_mask=torch.ones(2, 3))
    with pytest.raises(TypeError, match=r"attention_mask must be a torch\.Tensor"):
        model(ids, attention_mask=[[True] * 3] * 2)
    with pytest.raises(TypeError, match="document_ids must have dtype"):
        model(ids, document_ids=torch.zeros(2, 3))
    with pytest.raises(TypeError, match="state must be a list with one entry per layer"):
        model(ids, state=torch.zeros(2, 4, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"state must hold one entry per layer \(2\), got 1"):
        model(ids, state=[None])
    with pytest.raises(ValueError, match="d_v = 30 is not divisible by n_head = 4"):
        GateLoopConfig.tiny(d_v=30)
    with pytest.raises(ValueError, match="magnitude_activation must be one of"):
        GateLoopConfig.tiny(magnitude_activation="relu")
    with pytest.raises(ValueError, match="unknown GateLoopConfig fields: d_modle"):
        GateLoopConfig.tiny(d_modle=3)
    with pytest.raises(ValueError, match="tie_embeddings=True needs output_vocab_size == vocab_size"):
        GateLoopConfig.memory_horizon(tie_embeddings=True)


def test_fixed_variant_and_real_variant() -> None:
    fixed = GateLoopLM(GateLoopConfig.tiny(data_controlled=False))
    layer = fixed.blocks[0].time_mixing
    x1, x2 = torch.randn(1, 3, 32), torch.randn(1, 3, 32)
    assert torch.equal(layer.log_transitions(x1), layer.log_transitions(x2))
    real = GateLoopLM(GateLoopConfig.tiny(phase_activation="none"))
    assert not real.blocks[0].time_mixing.log_transitions(torch.randn(1, 3, 32)).is_complex()
    _, state = real(torch.randint(0, 97, (1, 5)), return_state=True)
    assert torch.all(state[0].imag == 0)


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
def test_wikitext_preset_layers_run(model_cls, config_cls) -> None:
    """The 125M presets' real layer shapes (624 SISO heads / 12 attention heads), one layer."""
    config = config_cls.wikitext103_125m(n_layer=1, vocab_size=1000)
    model = model_cls(config)
    logits = model(torch.randint(0, 1000, (1, 70)))
    assert logits.shape == (1, 70, 1000) and torch.isfinite(logits).all()


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
def test_bfloat16_model(model_cls, config_cls) -> None:
    model = _model(model_cls, config_cls, dtype=torch.bfloat16)
    ids = torch.randint(0, 97, (2, 40))
    logits, _ = model(ids, return_state=True)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    reference = _model(model_cls, config_cls, dtype=torch.float32)(ids)
    assert (logits.float() - reference).abs().max() < 0.1 * reference.abs().max()


def _padded(seqs: list[torch.Tensor], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded with id 0 on ``side`` ("left", "right") to the longest: (ids, bool mask) [B, L]."""
    L = max(len(s) for s in seqs)
    rows, masks = [], []
    for s in seqs:
        pad = torch.zeros(L - len(s), dtype=torch.long)
        real = torch.cat([torch.zeros(L - len(s)), torch.ones(len(s))]).bool()  # left: pads first
        rows.append(torch.cat([pad, s]) if side == "left" else torch.cat([s, pad]))
        masks.append(real if side == "left" else real.flip(0))
    return torch.stack(rows), torch.stack(masks)


@pytest.mark.parametrize(("model_cls", "config_cls"), MODELS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_generation_continues_each_row_from_its_last_real_token(model_cls, config_cls, side) -> None:
    """Greedy and sampled generation of a padded batch == each row generated alone (the new tokens
    start at column L whatever the padding)."""
    model = _model(model_cls, config_cls)
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(1, 97, (n,), generator=g) for n in (4, 7, 1)]
    ids, mask = _padded(seqs, side)
    out = model.generate(ids, 5, temperature=0, attention_mask=mask)
    assert torch.equal(out[:, :7], ids)
    for i, s in enumerate(seqs):
        alone = model.generate(s[None], 5, temperature=0)[0, len(s) :]
        assert torch.equal(out[i, 7:], alone), f"{side} row {i}"
    mask[1] = False
    with pytest.raises(ValueError, match=r"attention_mask rows \[1\] have no real token"):
        model.generate(ids, 2, attention_mask=mask)


def test_prefill_scores_only_the_last_position_and_checks_ids_once(monkeypatch) -> None:
    """The head sees [B, d_model] (never [B, L, d_model]); the range check (a host sync) runs once."""
    model = _model(GateLoopLM, GateLoopConfig)
    head_inputs: list[tuple[int, ...]] = []
    checks: list[int] = []
    logits, check = model.logits, model.check_input_ids
    monkeypatch.setattr(model, "logits", lambda h: head_inputs.append(tuple(h.shape)) or logits(h))
    monkeypatch.setattr(model, "check_input_ids", lambda ids: checks.append(1) or check(ids))
    model.generate(torch.randint(0, 97, (2, 30)), 6, temperature=0)
    assert head_inputs == [(2, 32)] * 6 and len(checks) == 1
