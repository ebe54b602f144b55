"""The real-valued decoding step (ops.step_real, GateLoop.step_real, RealStateDecodeStep) against
the complex one, and its ONNX export run by onnxruntime against our model (issue 26 item 6).

Tolerances: float64 paths agree with the complex reference to 1e-12 (the same products, rounded
differently: cos/sin vs complex exp); the float32 ONNX graph to 1e-4 in logits of magnitude ~1
(onnxruntime's own matmul and layer-norm kernels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gateloop.layers import GateLoop
from gateloop.models import GateLoopConfig, GateLoopLM, TransformerConfig, TransformerLM
from gateloop.models.generation import decode_step, prefill
from gateloop.models.real_state_step import (
    RealStateDecodeStep,
    complex_state,
    real_state,
    zero_real_state,
)
from gateloop.ops import gate_loop_step
from gateloop.ops.step_real import gate_loop_step_real

F64 = torch.float64


def _inputs(B: int = 2, H: int = 3, dk: int = 4, dv: int = 5, d: int = 4, phase: bool = True):
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(B, H, dk, generator=g, dtype=F64) for _ in range(2))
    v = torch.randn(B, H, dv, generator=g, dtype=F64)
    log_mag = -torch.rand(B, H, d, generator=g, dtype=F64)
    arg = (torch.rand(B, H, d, generator=g, dtype=F64) - 0.5) * 2 * math.pi if phase else None
    state = torch.randn(B, H, dk, dv, generator=g, dtype=torch.complex128)
    return q, k, v, log_mag, arg, state


def _complex_step(q, k, v, log_mag, arg, state):
    log_a = log_mag if arg is None else torch.complex(log_mag, arg)
    return gate_loop_step(q, k, v, log_a=log_a, state=state)


@pytest.mark.parametrize("d", [4, 1], ids=["per-key", "per-head"])
@pytest.mark.parametrize("phase", [True, False], ids=["complex-a", "real-a"])
def test_real_step_equals_the_complex_step(d: int, phase: bool) -> None:
    q, k, v, log_mag, arg, state = _inputs(d=d, phase=phase)
    y_ref, h_ref = _complex_step(q, k, v, log_mag, arg, state)
    y, h = gate_loop_step_real(q, k, v, log_abs_a=log_mag, arg_a=arg, state=torch.view_as_real(state))
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.view_as_complex(h), h_ref, rtol=0, atol=1e-12)


def test_real_step_from_the_zero_state_and_saturated_gates() -> None:
    """state None is the zero state; |a| = 0 (log -inf) forgets exactly, |a| = 1 keeps the state's
    modulus over 2000 steps as the complex loop does."""
    q, k, v, log_mag, arg, state = _inputs()
    y0, h0 = gate_loop_step_real(q, k, v, log_abs_a=log_mag, arg_a=arg, state=None)
    y_ref, h_ref = _complex_step(q, k, v, log_mag, arg, None)
    torch.testing.assert_close(torch.view_as_complex(h0), h_ref, rtol=0, atol=0)
    torch.testing.assert_close(y0, y_ref, rtol=0, atol=1e-12)
    forget = torch.full_like(log_mag, -math.inf)
    _, h = gate_loop_step_real(q, k, v, log_abs_a=forget, arg_a=arg, state=torch.view_as_real(state))
    assert torch.equal(h, h0)  # a = 0: the old state is gone, exactly
    keep = torch.zeros_like(log_mag)  # |a| = 1: a pure rotation
    h_real, h_complex = torch.view_as_real(state), state
    for _ in range(2000):
        _, h_real = gate_loop_step_real(q, k, v * 0, log_abs_a=keep, arg_a=arg, state=h_real)
        _, h_complex = _complex_step(q, k, v * 0, keep, arg, h_complex)
    torch.testing.assert_close(torch.view_as_complex(h_real), h_complex, rtol=0, atol=1e-11)
    torch.testing.assert_close(torch.view_as_complex(h_real).abs(), state.abs(), rtol=0, atol=1e-11)


def test_real_step_names_a_bad_argument() -> None:
    q, k, v, log_mag, arg, state = _inputs()
    with pytest.raises(ValueError, match=r"state must have shape \[B, H, dk, dv, 2\]"):
        gate_loop_step_real(q, k, v, log_abs_a=log_mag, arg_a=arg, state=torch.view_as_real(state)[..., 0])
    with pytest.raises(ValueError, match="q must be a real floating-point tensor"):
        gate_loop_step_real(q.to(torch.complex128), k, v, log_abs_a=log_mag, arg_a=arg, state=None)
    with pytest.raises(ValueError, match="arg_a must have log_abs_a's shape"):
        gate_loop_step_real(q, k, v, log_abs_a=log_mag, arg_a=arg[..., :1], state=None)
    with pytest.raises(ValueError, match=r"log_abs_a must have shape \[B, H, dk\|1\]"):
        gate_loop_step_real(q, k, v, log_abs_a=log_mag[..., :2], arg_a=None, state=None)


LAYER_OPTIONS = [
    {},
    {"per_head_transition": True},
    {"phase_activation": "none"},
    {"magnitude_activation": "exp_exp", "phase_activation": "exp", "output_gate": True, "group_norm": True},
    {"data_controlled": False},
]


@pytest.mark.parametrize("options", LAYER_OPTIONS, ids=lambda o: ",".join(o) or "paper")
def test_layer_step_real_equals_step(options: dict) -> None:
    torch.manual_seed(0)
    layer = GateLoop(16, n_head=2, dtype=F64, **options)
    x = torch.randn(3, 16, dtype=F64)
    state = None
    real = None
    for _ in range(4):
        y, state = layer.step(x, state)
        y_real, real = layer.step_real(x, real)
        torch.testing.assert_close(y_real, y, rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.view_as_complex(real), state, rtol=0, atol=1e-12)
        x = torch.randn(3, 16, dtype=F64)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_real_state_decode_step_equals_decode_step_over_20_tokens(norm_position: str) -> None:
    torch.manual_seed(0)
    model = GateLoopLM(GateLoopConfig.tiny(norm_position=norm_position), dtype=F64).eval()
    step = RealStateDecodeStep(model)
    with torch.no_grad():
        logits, cache = prefill(model, torch.randint(0, 97, (3, 7)))
        state = real_state(cache.states)
        for _ in range(20):
            token = logits.argmax(-1)
            real_logits, state = step(token, state)
            logits = decode_step(model, token, cache)
            torch.testing.assert_close(real_logits, logits, rtol=0, atol=1e-12)
            for ours, theirs in zip(complex_state(state), cache.states, strict=True):
                torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_the_decode_step_from_the_zero_state_is_the_prompts_forward() -> None:
    """Feeding a prompt token by token from zero_real_state gives the parallel forward's logits."""
    torch.manual_seed(0)
    model = GateLoopLM(GateLoopConfig.tiny(), dtype=F64).eval()
    ids = torch.randint(0, 97, (2, 9))
    step, state = RealStateDecodeStep(model), zero_real_state(model, 2)
    with torch.no_grad():
        parallel = model(ids)  # (2, 9, 97)
        for t in range(9):
            logits, state = step(ids[:, t], state)
            torch.testing.assert_close(logits, parallel[:, t], rtol=0, atol=1e-12)


def test_the_transformer_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"needs a GateLoopLM.*got TransformerLM"):
        RealStateDecodeStep(TransformerLM(TransformerConfig.tiny()))


# ---------------------------------------------------------------- ONNX (the [onnx] extra)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from gateloop.export.onnx import export_decode_step_onnx

    torch.manual_seed(0)
    model = GateLoopLM(GateLoopConfig.tiny())  # left in training mode: the export must not care
    path = export_decode_step_onnx(model, tmp_path_factory.mktemp("onnx") / "step.onnx")
    return model, path


def test_onnxruntime_generates_our_tokens_over_20_steps(exported) -> None:
    """Greedy decoding with onnxruntime (prompt fed token by token) gives our model's tokens and
    logits (parallel prefill, then cached steps), for a batch size other than the export's."""
    from gateloop.export.onnx import OnnxDecoder, compare_with_model

    model, path = exported
    assert model.training  # the export left the mode as it was
    prompts = torch.randint(0, 97, (3, 6), generator=torch.Generator().manual_seed(1))
    check = compare_with_model(model, path, prompts, max_new_tokens=20)
    assert check["tokens_equal"] and check["new_tokens"] == 60
    assert check["max_abs_logit_diff"] < 1e-4, check
    assert model.training
    decoder = OnnxDecoder(path)
    logits, state = decoder.prefill(prompts[:1].numpy())  # batch 1
    with torch.no_grad():
        ours, cache = prefill(model.eval(), prompts[:1])
    model.train()
    np.testing.assert_allclose(logits, ours.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(state, real_state(cache.states).numpy(), rtol=0, atol=1e-5)


def test_the_onnx_file_describes_its_state(exported) -> None:
    import onnx

    from gateloop.export.onnx import OnnxDecoder

    model, path = exported
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["state_shape"] == '[2, "batch", 4, 8, 8, 2]'
    assert GateLoopConfig.from_dict(__import__("json").loads(meta["gateloop_config"])) == model.config
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "state"]
    assert [o.name for o in graph.output] == ["logits", "new_state"]
    assert OnnxDecoder(path).zero_state(5).shape == (2, 5, 4, 8, 8, 2)


def test_export_refuses_bfloat16_weights(tmp_path) -> None:
    pytest.importorskip("onnxscript")
    from gateloop.export.onnx import export_decode_step_onnx

    with pytest.raises(ValueError, match="model weights must be one of"):
        export_decode_step_onnx(GateLoopLM(GateLoopConfig.tiny(), dtype=torch.bfloat16), tmp_path / "x.onnx")


def test_cli_to_onnx_writes_and_checks(tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from gateloop.cli import main

    torch.manual_seed(0)
    GateLoopLM(GateLoopConfig.tiny()).save_pretrained(tmp_path / "model")
    rc = main(["convert", "to-onnx", "--run", str(tmp_path / "model"), "--out", str(tmp_path / "step.onnx")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert (tmp_path / "step.onnx").is_file()
    assert "20 greedy tokens equal" in out
