"""The GateLoop time-mixing layer: parametrisation, presets, masks, errors."""

from __future__ import annotations

import math
import re

import pytest
import torch

from gateloop import gate_loop
from gateloop.layers import CausalSelfAttention, FeedForward, GateLoop, is_transition_parameter

from helpers import assert_close


def _layer(**kw) -> GateLoop:
    torch.manual_seed(0)
    return GateLoop(16, n_head=2, **kw).double()


def test_shapes_and_heads() -> None:
    layer = GateLoop(64, n_head=64)  # the paper's SISO layer: 64 heads of 1x1 states
    assert layer.head_qk == 1 and layer.head_v == 1
    assert layer(torch.randn(2, 33, 64)).shape == (2, 33, 64)
    layer = GateLoop(32, d_qk=16, d_v=48, n_head=4)
    assert layer(torch.randn(3, 5, 32)).shape == (3, 5, 32)


def test_forward_is_the_op_on_the_projections() -> None:
    """y = W_o Re(q h) with log a = logσ(W_α x + b_α) + i (W_β x + b_β), per key dim."""
    layer = _layer()
    x = torch.randn(2, 21, 16, dtype=torch.float64)
    B, L, H, dk = 2, 21, 2, 8
    q = layer.q_proj(x).view(B, L, H, dk)
    k = layer.k_proj(x).view(B, L, H, dk)
    v = layer.v_proj(x).view(B, L, H, dk)
    alpha = layer.alpha_proj(x).view(B, L, H, dk)
    beta = layer.beta_proj(x).view(B, L, H, dk)
    a = torch.sigmoid(alpha) * torch.exp(1j * beta)
    y, _ = gate_loop(q, k, v, a, mode="recurrent")
    expected = layer.out_proj(y.reshape(B, L, 16))
    assert_close("layer", expected, layer(x), 1e-10)


@pytest.mark.parametrize("mode", ["chunk", "recurrent", "scan", "attention"])
def test_modes_agree(mode: str) -> None:
    layer = _layer()
    x = torch.randn(2, 40, 16, dtype=torch.float64)
    ref = layer(x)
    layer.mode = mode
    assert_close(mode, ref, layer(x), 1e-10)


def test_saturated_gates_stay_finite() -> None:
    """α -> -200 (|a| = e^-200, log(sigmoid) would be -inf in float32): output and grads finite."""
    layer = GateLoop(16, n_head=2)
    with torch.no_grad():
        layer.alpha_proj.bias.fill_(-200.0)
    x = torch.randn(2, 70, 16, requires_grad=True)
    y = layer(x)
    y.square().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


def test_initial_magnitudes_follow_magnitude_init() -> None:
    layer = GateLoop(32, n_head=4, magnitude_init=(0.95, 0.99))
    with torch.no_grad():
        layer.alpha_proj.weight.zero_()
        mags = torch.exp(layer.log_transitions(torch.randn(1, 3, 32)).real)
    assert mags.min() >= 0.95 - 1e-6 and mags.max() <= 0.99 + 1e-6


def test_data_controlled_false_is_input_independent() -> None:
    layer = GateLoop(16, n_head=2, data_controlled=False)
    t1 = layer.log_transitions(torch.randn(2, 9, 16))
    t2 = layer.log_transitions(torch.randn(2, 9, 16))
    assert torch.equal(t1, t2)
    assert t1.shape == (2, 9, 2, 8)
    assert layer.alpha_proj is None and layer.alpha is not None


def test_data_controlled_true_depends_on_input() -> None:
    layer = GateLoop(16, n_head=2)
    assert not torch.allclose(
        layer.log_transitions(torch.randn(1, 4, 16)), layer.log_transitions(torch.randn(1, 4, 16))
    )


def test_phase_none_is_real() -> None:
    layer = GateLoop(16, n_head=2, phase_activation="none")
    assert not layer.log_transitions(torch.randn(1, 4, 16)).is_complex()
    assert layer.beta_proj is None


def test_magnitude_none_never_forgets() -> None:
    layer = GateLoop(16, n_head=2, magnitude_activation="none", phase_activation="none")
    assert torch.equal(layer.log_transitions(torch.randn(1, 4, 16)), torch.zeros(1, 4, 2, 8))


def test_lru_activation_and_ring_init() -> None:
    layer = GateLoop.lru_like(32, n_head=4)
    log_a = layer.log_transitions(torch.randn(1, 2, 32))
    mags = torch.exp(log_a.real)
    assert mags.min() >= 0.9 - 1e-6 and mags.max() <= 0.999 + 1e-6
    assert (log_a.imag > 0).all() and (log_a.imag <= 2 * math.pi + 1e-5).all()
    assert layer.alpha.requires_grad  # LRU trains its fixed transitions


def test_s4d_lin_init() -> None:
    layer = GateLoop.s4d_like(32, n_head=4)  # dk = 8
    log_a = layer.log_transitions(torch.randn(1, 1, 32))[0, 0].to(torch.complex128)  # (H, dk)
    dt = -2 * log_a.real  # log|a| = -Δ/2
    assert torch.allclose(dt, dt[:, :1].expand_as(dt), rtol=1e-5)  # one Δ per head
    assert (dt >= 1e-3 * 0.999).all() and (dt <= 0.1 * 1.001).all()
    expected_phase = math.pi * torch.arange(8, dtype=torch.float64) * dt[:, :1]
    assert torch.allclose(log_a.imag, expected_phase, rtol=1e-4, atol=1e-6)


def test_retnet_like_is_fixed_and_frozen() -> None:
    layer = GateLoop.retnet_like(32, n_head=4)
    log_a = layer.log_transitions(torch.randn(1, 1, 32))[0, 0].to(torch.complex128)  # (H, dk)
    gamma = torch.exp(log_a.real[:, 0])
    expected = 1 - 2.0 ** (-5 - torch.arange(4, dtype=torch.float64))
    assert torch.allclose(gamma, expected, rtol=1e-6)
    assert not layer.alpha.requires_grad and not layer.beta.requires_grad
    assert layer.q_proj.weight.requires_grad  # q, k stay data-controlled


def test_transition_parameters_are_tagged() -> None:
    layer = GateLoop(16, n_head=2)
    tagged = {n for n, p in layer.named_parameters() if is_transition_parameter(p)}
    assert tagged == {"alpha_proj.weight", "alpha_proj.bias", "beta_proj.weight", "beta_proj.bias"}
    fixed = GateLoop(16, n_head=2, data_controlled=False)
    assert {n for n, p in fixed.named_parameters() if is_transition_parameter(p)} == {"alpha", "beta"}


def test_extensions_output_gate_and_group_norm() -> None:
    layer = GateLoop(16, n_head=2, output_gate=True, group_norm=True)
    assert layer(torch.randn(2, 7, 16)).shape == (2, 7, 16)


def test_step_matches_forward() -> None:
    layer = _layer(per_head_transition=True)
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    full, h_full = layer(x, return_state=True)
    state = None
    outs = []
    for t in range(12):
        y, state = layer.step(x[:, t], state)
        outs.append(y)
    assert_close("steps", full, torch.stack(outs, 1), 1e-10)
    assert_close("state", h_full, state, 1e-10)


def test_padding_is_identity_on_state() -> None:
    layer = _layer()
    x = torch.randn(1, 10, 16, dtype=torch.float64)
    pad = torch.randn(1, 4, 16, dtype=torch.float64)
    alone, h_alone = layer(x, return_state=True)
    left = torch.cat([pad, x], 1)
    mask = torch.tensor([[False] * 4 + [True] * 10])
    y_left, h_left = layer(left, attention_mask=mask, return_state=True)
    assert_close("left", alone, y_left[:, 4:], 1e-10)
    assert_close("left state", h_alone, h_left, 1e-10)
    right = torch.cat([x, pad], 1)
    y_right, h_right = layer(right, attention_mask=mask.flip(1), return_state=True)
    assert_close("right", alone, y_right[:, :10], 1e-10)
    assert_close("right state", h_alone, h_right, 1e-10)  # pads after the sequence change nothing


def test_document_ids_restart_the_state() -> None:
    layer = _layer()
    a, b = torch.randn(1, 6, 16, dtype=torch.float64), torch.randn(1, 9, 16, dtype=torch.float64)
    packed = torch.cat([a, b], 1)
    ids = torch.tensor([[0] * 6 + [1] * 9])
    y, h = layer(packed, document_ids=ids, return_state=True)
    y_b, h_b = layer(b, return_state=True)
    assert_close("doc a", layer(a), y[:, :6], 1e-10)
    assert_close("doc b", y_b, y[:, 6:], 1e-10)
    assert_close("state", h_b, h, 1e-10)


@pytest.mark.parametrize("mode", ["chunk", "recurrent", "scan", "attention"])
def test_padding_and_resets_with_complex_transitions(mode: str) -> None:
    """Padding (a = 1: log|a| = 0 and phase 0, k = 0) and document resets (log|a| = -inf, phase
    kept) on fast-rotating complex transitions, together in one batch: a left-padded row of two
    documents gives each document's output alone; a right-padded row gives its unpadded output."""
    torch.manual_seed(0)
    layer = GateLoop.lru_like(16, n_head=2, data_controlled=True, mode=mode).double()  # phases up to 2π
    assert layer.log_transitions(torch.randn(1, 3, 16, dtype=torch.float64)).is_complex()
    doc_a, doc_b = torch.randn(1, 5, 16, dtype=torch.float64), torch.randn(1, 7, 16, dtype=torch.float64)
    plain = torch.randn(1, 9, 16, dtype=torch.float64)
    pad = 3
    L = pad + 12
    rows = torch.cat(
        [
            torch.cat([torch.randn(1, pad, 16, dtype=torch.float64), doc_a, doc_b], 1),
            torch.cat([plain, torch.randn(1, L - 9, 16, dtype=torch.float64)], 1),
        ]
    )
    mask = torch.tensor([[False] * pad + [True] * 12, [True] * 9 + [False] * (L - 9)])
    ids = torch.tensor([[0] * pad + [1] * 5 + [2] * 7, [0] * L])
    y, h = layer(rows, attention_mask=mask, document_ids=ids, return_state=True)
    y_b, h_b = layer(doc_b, return_state=True)
    y_plain, h_plain = layer(plain, return_state=True)
    assert_close("document a", layer(doc_a)[0], y[0, pad : pad + 5], 1e-10)
    assert_close("document b", y_b[0], y[0, pad + 5 :], 1e-10)
    assert_close("state after document b", h_b[0], h[0], 1e-10)
    assert_close("right-padded row", y_plain[0], y[1, :9], 1e-10)
    assert_close("right-padded state", h_plain[0], h[1], 1e-10)


def test_log_transitions_is_the_unmasked_parametrisation() -> None:
    """log a = log f(α) + i g(β) of the projections, the same for a sequence and one token."""
    layer = _layer()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    log_a = layer.log_transitions(x)
    alpha = layer.alpha_proj(x).view(2, 5, 2, 8)
    beta = layer.beta_proj(x).view(2, 5, 2, 8)
    assert torch.equal(log_a, torch.complex(torch.nn.functional.logsigmoid(alpha), beta))
    assert_close("one token", log_a[:, 2], layer.log_transitions(x[:, 2]), 1e-12)


def test_layer_errors() -> None:
    with pytest.raises(ValueError, match=r"d_qk = 30 is not divisible by n_head = 4"):
        GateLoop(32, d_qk=30, n_head=4)
    with pytest.raises(ValueError, match="magnitude_activation must be one of"):
        GateLoop(16, magnitude_activation="tanh")
    with pytest.raises(ValueError, match="phase_activation must be one of"):
        GateLoop(16, phase_activation="sin")
    with pytest.raises(ValueError, match="x must have shape \\[B, L, d_model\\] with d_model = 16"):
        GateLoop(16)(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="attention_mask must have shape \\[B, L\\] = \\(2, 3\\)"):
        GateLoop(16)(torch.randn(2, 3, 16), attention_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"attention_mask must have dtype torch\.bool"):
        GateLoop(16)(torch.randn(2, 3, 16), attention_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="trainable_transitions=False needs data_controlled=False"):
        GateLoop(16, trainable_transitions=False)


def test_layer_type_and_value_errors() -> None:
    """A non-tensor or a wrong dtype is a TypeError; a wrong shape or value is a ValueError."""
    layer = GateLoop(16, n_head=2)
    x = torch.randn(2, 3, 16)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got list"):
        layer([[0.0] * 16])
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor, got torch\.int64"):
        layer(torch.zeros(2, 3, 16, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        layer.log_transitions(None)
    with pytest.raises(ValueError, match=r"x must have shape \[B, d_model\] with d_model = 16"):
        layer.step(torch.randn(2, 3, 16), None)
    with pytest.raises(TypeError, match=r"attention_mask must be a torch\.Tensor, got list"):
        layer(x, attention_mask=[[True] * 3] * 2)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \[B, L\] = \(2, 3\), got \(3,"):
        layer(x, attention_mask=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"document_ids must have dtype torch\.int64.*; got torch\.float32"):
        layer(x, document_ids=torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"document_ids must have dtype"):
        layer(x, document_ids=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"document_ids must have shape \[B, L\] = \(2, 3\)"):
        layer(x, document_ids=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"state must be a torch\.Tensor, got list"):
        layer(x, state=[torch.zeros(2, 2, 8, 8, dtype=torch.complex64)])
    with pytest.raises(TypeError, match=r"state must be a torch\.Tensor, got dict"):
        layer(x[:, :1], state={})  # the one-token path too
    with pytest.raises(TypeError, match=r"d_model must be a positive int"):
        GateLoop(16.0)
    with pytest.raises(ValueError, match=r"n_head must be a positive int, got 0"):
        GateLoop(16, n_head=0)
    with pytest.raises(ValueError, match=r"mode must be one of 'chunk'"):
        GateLoop(16, mode="softmax")
    with pytest.raises(ValueError, match=r"activation must be one of 'gelu', 'relu', 'silu'; got 'tanh'"):
        FeedForward(16, 32, activation="tanh")


def test_attention_type_and_value_errors() -> None:
    attention = CausalSelfAttention(16, 2)
    x = torch.randn(2, 3, 16)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got tuple"):
        attention((1, 2))
    with pytest.raises(ValueError, match=r"x must have shape \[B, L, d_model\] with d_model = 16"):
        attention(torch.randn(2, 3, 8))
    with pytest.raises(TypeError, match=r"attention_mask must have dtype torch\.bool; got torch\.int64"):
        attention(x, attention_mask=torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \[B, L\] = \(2, 3\)"):
        attention(x, attention_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"document_ids must have dtype"):
        attention(x, document_ids=torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"state must be a KV cache dict"):
        attention(x, state=torch.zeros(2, 2, 3, 8))
    _, cache = attention(x, return_state=True)
    with pytest.raises(ValueError, match=r"state\['k'\] has 2 rows but x has B = 1"):
        attention(x[:1], state=cache)
    with pytest.raises(ValueError, match=r"state is missing KV cache entries \['next_pos'\]"):
        attention(x, state={k: v for k, v in cache.items() if k != "next_pos"})


def test_attention_decode_step_makes_no_host_sync(monkeypatch) -> None:
    """A cached step (padded prompt, a cache after a masked position) reads no tensor value on the
    host: no bool(), item() or tolist() of a tensor, so GPU decoding is never stalled."""
    torch.manual_seed(0)
    attention = CausalSelfAttention(16, 2).eval()
    mask = torch.tensor([[False, True, True], [True, True, True]])
    x = torch.randn(2, 3, 16)
    _, cache = attention(x, attention_mask=mask, return_state=True)
    step = torch.randn(2, 1, 16)
    expected, _ = attention(step, state=cache, return_state=True)

    def refuse(self, *args, **kwargs):
        raise AssertionError("host sync: a tensor's value was read during a decode step")

    for name in ("__bool__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    y, cache = attention(step, state=cache, return_state=True)
    monkeypatch.undo()
    assert torch.equal(y, expected)


def test_model_config_declares_the_layer_options_as_the_layer_does() -> None:
    """GateLoopConfig keeps the layer's options flat (its saved form and flags); they must be
    GateLoopOptions' fields with the same types and defaults (n_head aside: the paper's model
    has 624 SISO heads, a bare layer one), so the two declarations cannot drift."""
    import dataclasses
    import typing

    from gateloop.layers import GateLoopOptions
    from gateloop.models import GateLoopConfig

    layer_hints = typing.get_type_hints(GateLoopOptions)
    model_hints = typing.get_type_hints(GateLoopConfig)
    model_defaults = {f.name: f.default for f in dataclasses.fields(GateLoopConfig)}
    for f in dataclasses.fields(GateLoopOptions):
        assert model_hints[f.name] == layer_hints[f.name], f.name
        if f.name != "n_head":
            assert model_defaults[f.name] == f.default, f.name
    assert GateLoopConfig.tiny().layer_options() == GateLoopOptions(n_head=4)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("mode", "softmax", "mode must be one of 'chunk', 'recurrent', 'scan', 'attention'"),
        ("chunk_size", 0, "chunk_size must be a positive int"),
        ("phase_init_max", -1.0, "phase_init_max must be >= 0"),
        ("magnitude_init", (0.5, 1.0), "magnitude_init must satisfy 0 < low <= high < 1"),
        ("n_head", 5, "d_qk = 32 is not divisible by n_head = 5"),
    ],
)
def test_a_layer_and_a_model_refuse_an_option_with_one_message(
    option: str, value: object, message: str
) -> None:
    """One validator: the layer and the model config give the same error for the same option
    (they had drifted: the layer accepted chunk_size 0 and a negative phase range, the config an
    s4d_lin init with an exp phase)."""
    from gateloop.models import GateLoopConfig

    with pytest.raises(ValueError, match=re.escape(message)):
        GateLoop(32, **{option: value})
    with pytest.raises(ValueError, match=re.escape(message)):
        GateLoopConfig.tiny(**{option: value})


def test_s4d_init_with_an_exp_phase_is_refused_by_the_model_config_too() -> None:
    from gateloop.models import GateLoopConfig

    with pytest.raises(ValueError, match="s4d_lin"):
        GateLoopConfig.tiny(transition_init="s4d_lin", phase_activation="exp")


def test_unknown_layer_option_is_a_type_error_listing_the_options() -> None:
    with pytest.raises(TypeError, match=r"unknown option.*'n_heads'.*n_head"):
        GateLoop(32, n_heads=4)
