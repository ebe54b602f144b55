"""What transformers' own model tests expect of a model class (its common and generation test
mixins, as run on mamba, rwkv, xlstm): weights a checkpoint lacks are initialised (not left as
uninitialised memory), resize_token_embeddings works tied and untied, GenerationMixin is a direct
base, and generation continues from a returned cache."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

import gateloop.hf  # noqa: F401  (registers the Auto classes)
from gateloop.hf import GateLoopForCausalLM, GateLoopHFConfig, GateLoopModel
from gateloop.models import GateLoopConfig, GateLoopLM


def _model(**native: object) -> GateLoopForCausalLM:
    torch.manual_seed(0)
    return GateLoopForCausalLM(GateLoopHFConfig.from_native(GateLoopConfig.tiny(**native))).eval()


def test_building_the_hf_model_draws_its_weights_once() -> None:
    """transformers' init pass does not draw the weights again: the HF model built under a seed
    holds the weights our model gets under that seed."""
    hf = _model()
    torch.manual_seed(0)
    ours = GateLoopLM(GateLoopConfig.tiny())
    assert all(torch.equal(hf.model.state_dict()[k], v) for k, v in ours.state_dict().items())


def test_a_tied_save_reloaded_untied_gets_an_initialised_head(tmp_path) -> None:
    """Was: the missing head stayed uninitialised memory (NaN logits) while transformers reported
    it newly initialised."""
    tied = _model(tie_embeddings=True)
    tied.save_pretrained(tmp_path)
    untied = GateLoopForCausalLM.from_pretrained(tmp_path, tie_word_embeddings=False).eval()
    head = untied.model.head.weight
    assert torch.isfinite(untied(torch.randint(0, 97, (2, 5))).logits).all()
    assert abs(head.std().item() - 0.02) < 0.004 and abs(head.mean().item()) < 0.004  # N(0, 0.02)
    saved = tied.model.state_dict()
    assert all(torch.equal(untied.model.state_dict()[k], v) for k, v in saved.items())  # loaded: as saved


def test_a_missing_transition_projection_gets_the_layers_own_init(tmp_path) -> None:
    """The α projection's bias sets the initial |a| (in magnitude_init = (0.9, 0.999)), its weights
    start at 1/10 of a Linear's: a checkpoint without them gets that, not a Linear's default."""
    model = _model()
    model.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    prefix = "model.blocks.0.time_mixing.alpha_proj."
    save_file(
        {k: v for k, v in weights.items() if not k.startswith(prefix)}, str(tmp_path / "model.safetensors")
    )
    reloaded = GateLoopForCausalLM.from_pretrained(tmp_path)
    projection = reloaded.model.blocks[0].time_mixing.alpha_proj
    magnitude = torch.sigmoid(projection.bias)
    assert (magnitude >= 0.9 - 1e-6).all() and (magnitude <= 0.999 + 1e-6).all()
    assert projection.weight.abs().max() <= 0.1 / 32**0.5 + 1e-7
    for name, tensor in reloaded.state_dict().items():
        if not name.startswith(prefix):
            assert torch.equal(tensor, weights[name]), name


def test_resize_token_embeddings_untied_and_tied(tmp_path) -> None:
    """Was: untied raised on a missing lm_head; tied left our config's vocabulary stale, so the new
    ids were refused."""
    for tie in (False, True):
        model = _model(tie_embeddings=tie)
        old = model.model.embed.weight[:97].clone()
        model.resize_token_embeddings(120)
        assert model.config.vocab_size == model.model.config.vocab_size == 120
        logits = model(torch.tensor([[119, 3, 100]])).logits
        assert logits.shape == (1, 3, 120) and torch.isfinite(logits).all()
        assert torch.equal(model.model.embed.weight[:97], old)
        model.save_pretrained(tmp_path / str(tie))
        again = GateLoopForCausalLM.from_pretrained(tmp_path / str(tie)).eval()
        assert torch.equal(again(torch.tensor([[119, 3, 100]])).logits, logits)


def test_generation_mixin_is_a_direct_base_and_generation_continues_from_a_cache() -> None:
    from transformers import GenerationMixin

    assert GenerationMixin in GateLoopForCausalLM.__bases__
    assert GenerationMixin not in GateLoopModel.__mro__  # the base model does not generate
    model = _model()
    ids = torch.randint(0, 97, (2, 6))
    first = model.generate(ids, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    continued = model.generate(first.sequences, cache=first.cache, max_new_tokens=3, do_sample=False)
    assert torch.equal(continued, model.generate(ids, max_new_tokens=6, do_sample=False))


def test_torch_export_takes_and_returns_the_cache() -> None:
    """GateLoopCache is a pytree container: one decoding step exports with the cache as input and
    output, and the exported step equals the eager one (was: export refused the cache type)."""
    from gateloop.hf.cache import GateLoopCache

    model = _model()

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: torch.Tensor, cache: GateLoopCache) -> tuple[torch.Tensor, GateLoopCache]:
            out = self.model(ids, cache=cache, use_cache=True)
            return out.logits, out.cache

    prompt = model(torch.randint(0, 97, (2, 5)), use_cache=True).cache

    def copy() -> GateLoopCache:
        return GateLoopCache(list(prompt.states), prompt.num_tokens)

    token = torch.randint(0, 97, (2, 1))
    exported = torch.export.export(Step(), (token, copy()))
    logits, cache = exported.module()(token, copy())
    eager = model(token, cache=copy(), use_cache=True)
    torch.testing.assert_close(logits, eager.logits, rtol=0, atol=1e-6)
    assert isinstance(cache, GateLoopCache) and cache.num_tokens == 6
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(cache.states, eager.cache.states, strict=True))


def test_blocks_are_transformers_gradient_checkpointing_layers() -> None:
    """transformers' own checkpointing hook is what drives our blocks (as MambaBlock): every
    block of both classes is a GradientCheckpointingLayer (was: none, so transformers' common
    tests and tools that look for one found nothing); enabling checkpointing calls its
    ``_gradient_checkpointing_func`` once per block per step, gradients unchanged; our own
    trainer's checkpointing still works on the same blocks; names and weights are as before."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from gateloop.hf import GateLoopTransformerForCausalLM, GateLoopTransformerHFConfig
    from gateloop.models import TransformerConfig
    from gateloop.training.activation_checkpointing import apply_activation_checkpointing

    torch.manual_seed(0)
    transformer = GateLoopTransformerForCausalLM(
        GateLoopTransformerHFConfig.from_native(TransformerConfig.tiny())
    )
    ids = torch.randint(0, 97, (2, 6))
    for model in (_model(), GateLoopModel(GateLoopHFConfig.from_native(GateLoopConfig.tiny())), transformer):
        blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
        assert len(blocks) == 2, type(model).__name__
    model = _model().train()
    reference = torch.autograd.grad(model(ids, labels=ids).loss, list(model.parameters()))
    model.activation_checkpointing_enable()
    calls = []
    for block in model.model.blocks:
        inner = block._gradient_checkpointing_func
        block._gradient_checkpointing_func = lambda *a, _f=inner, **k: calls.append(1) or _f(*a, **k)
    grads = torch.autograd.grad(model(ids, labels=ids).loss, list(model.parameters()))
    assert len(calls) == 2
    for got, want in zip(grads, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    model.activation_checkpointing_disable()
    assert not any(block.gradient_checkpointing for block in model.model.blocks)
    fresh = _model().train()
    apply_activation_checkpointing(fresh.model)  # our trainer's path on the same block class
    grads = torch.autograd.grad(fresh(ids, labels=ids).loss, list(fresh.parameters()))
    for got, want in zip(grads, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert list(_model().state_dict()) == [
        "model." + k for k in GateLoopLM(GateLoopConfig.tiny()).state_dict()
    ]
