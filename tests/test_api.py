"""Public API: dtypes, shapes, defaults and clear errors on bad input."""

from __future__ import annotations

import re

import pytest
import torch

import gateloop
from gateloop import gate_loop, gate_loop_step

from helpers import assert_close, make_problem, rel_rms


def _qkv(B=2, L=9, H=3, dk=4, dv=5, dtype=torch.float32):
    q, k = torch.randn(2, B, L, H, dk, dtype=dtype)
    v = torch.randn(B, L, H, dv, dtype=dtype)
    return q, k, v


def test_public_api() -> None:
    assert set(gateloop.__all__) >= {"gate_loop", "gate_loop_step"}
    assert gateloop.MODES == ("chunk", "recurrent", "scan", "attention", "softmax")


@pytest.mark.parametrize("mode", ["chunk", "recurrent", "scan", "attention", "softmax"])
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_inputs_compute_in_float32(mode: str, half: torch.dtype) -> None:
    q, k, v = _qkv()
    log_a = torch.complex(-torch.rand(2, 9, 3, 4), torch.randn(2, 9, 3, 4))
    qh, kh, vh = q.to(half), k.to(half), v.to(half)
    y_half, _ = gate_loop(qh, kh, vh, log_a=log_a, mode=mode)
    y_ref, _ = gate_loop(qh.float(), kh.float(), vh.float(), log_a=log_a, mode=mode)
    assert y_half.dtype == half
    assert rel_rms(y_ref, y_half.float()) < 1e-2  # only the final cast to half rounds


def test_final_state_dtype_and_none() -> None:
    q, k, v = _qkv(dtype=torch.float64)
    y, h = gate_loop(q, k, v, log_a=-torch.rand(2, 9, 3, 1, dtype=torch.float64))
    assert h is None and y.dtype == torch.float64
    _, h = gate_loop(q, k, v, log_a=-torch.rand(2, 9, 3, 1, dtype=torch.float64), output_final_state=True)
    assert h.dtype == torch.complex128 and h.shape == (2, 3, 4, 5)


def test_real_initial_state_accepted() -> None:
    p = make_problem(B=1, L=20, H=2, dk=3, dv=3, seed=0)
    h0 = p.h0.real.float()
    outs = [
        gate_loop(
            p.q.float(),
            p.k.float(),
            p.v.float(),
            log_a=p.trans.to(torch.complex64),
            mode=m,
            initial_state=h0,
            output_final_state=True,
        )
        for m in ("chunk", "recurrent")
    ]
    assert_close("y", outs[1][0], outs[0][0], 1e-5)
    assert_close("h", outs[1][1], outs[0][1], 1e-5)


def test_softmax_default_scale_and_uniform_rows() -> None:
    """With a = 1 and k = 0 every score is 0, so softmax averages v over the prefix."""
    q, k, v = _qkv(B=1, L=6, H=1, dk=4, dv=2, dtype=torch.float64)
    y, _ = gate_loop(
        q, torch.zeros_like(k), v, log_a=torch.zeros(1, 6, 1, 4, dtype=torch.float64), mode="softmax"
    )
    expected = torch.cumsum(v, dim=1) / torch.arange(1, 7, dtype=torch.float64)[None, :, None, None]
    assert torch.allclose(y, expected)
    # default scale dk ** -0.5 equals passing it explicitly
    log_a = -torch.rand(1, 6, 1, 4, dtype=torch.float64)
    y1, _ = gate_loop(q, k, v, log_a=log_a, mode="softmax")
    y2, _ = gate_loop(q, k, v, log_a=log_a, mode="softmax", scale=0.5)
    assert torch.allclose(y1, y2)


def test_softmax_matches_direct_formula() -> None:
    """Eq 22-23 written out with an explicit O(L^2) loop in float64."""
    p = make_problem(B=1, L=12, H=2, dk=3, dv=2, with_h0=False, seed=4)
    a = torch.exp(p.trans)
    y, _ = gate_loop(p.q, p.k, p.v, log_a=p.trans, mode="softmax", scale=0.3)
    L = p.q.shape[1]
    expected = torch.zeros_like(y)
    for h in range(2):
        for n in range(L):
            scores = []
            for m in range(n + 1):
                decay = torch.prod(a[0, m + 1 : n + 1, h], dim=0) if n > m else torch.ones(3, dtype=a.dtype)
                scores.append((0.3 * (p.q[0, n, h] * p.k[0, m, h] * decay).sum()).real)
            w = torch.softmax(torch.stack(scores), dim=0)
            expected[0, n, h] = (w[:, None] * p.v[0, : n + 1, h]).sum(0)
    assert_close("softmax", expected, y, 1e-12)


def err(match: str):
    return pytest.raises(
        (ValueError, TypeError), match=re.escape(match) if not match.startswith("re:") else match[3:]
    )


def test_errors_name_the_argument() -> None:
    q, k, v = _qkv()
    la = -torch.rand(2, 9, 3, 4)
    with err("exactly one of a= or log_a="):
        gate_loop(q, k, v)
    with err("exactly one of a= or log_a="):
        gate_loop(q, k, v, torch.rand(2, 9, 3, 4), log_a=la)
    with err("mode must be one of"):
        gate_loop(q, k, v, log_a=la, mode="fft")
    with err("k must have the shape of q (2, 9, 3, 4)"):
        gate_loop(q, k[..., :3], v, log_a=la)
    with err("v must have shape [B, L, H, dv] with B, L, H = (2, 9, 3)"):
        gate_loop(q, k, v[:, :8], log_a=la)
    with err("q must have shape [B, L, H, dk] (4 dims), got shape (9, 3, 4)"):
        gate_loop(q[0], k[0], v[0], log_a=la[0])
    with err("log_a must have shape [B, L, H, dk] = (2, 9, 3, 4)"):
        gate_loop(q, k, v, log_a=la[..., :2])
    with err("a must have shape [B, L, H, dk]"):
        gate_loop(q, k, v, torch.rand(1, 9, 3, 4))  # no silent broadcast over B
    with err("initial_state must have shape [B, H, dk, dv] = (2, 3, 4, 5)"):
        gate_loop(q, k, v, log_a=la, initial_state=torch.zeros(2, 3, 5, 4))
    with err("mode='softmax' has no recurrent state"):
        gate_loop(q, k, v, log_a=la, mode="softmax", initial_state=torch.zeros(2, 3, 4, 5))
    with err("mode='softmax' has no recurrent state"):
        gate_loop(q, k, v, log_a=la, mode="softmax", output_final_state=True)
    with err("v must be a real floating-point tensor, got dtype torch.complex64"):
        gate_loop(q, k, v.to(torch.complex64), log_a=la)
    with err("q must be a floating-point or complex tensor, got dtype torch.int64"):
        gate_loop(q.long(), k, v, log_a=la)
    with err("k has dtype torch.float64 but q has torch.float32"):
        gate_loop(q, k.double(), v, log_a=la)
    with err("log_a has dtype torch.float64 but q, k, v compute in torch.float32"):
        gate_loop(q, k, v, log_a=la.double())
    with err("chunk_size applies to mode='chunk' only"):
        gate_loop(q, k, v, log_a=la, mode="scan", chunk_size=8)
    with err("chunk_size must be a positive int, got 0"):
        gate_loop(q, k, v, log_a=la, chunk_size=0)
    with err("scale must be finite"):
        gate_loop(q, k, v, log_a=la, scale=float("nan"))
    with err("q has sequence length L = 0"):
        gate_loop(q[:, :0], k[:, :0], v[:, :0], log_a=la[:, :0])
    with err("q must be a torch.Tensor, got list"):
        gate_loop([1.0], k, v, log_a=la)


_Q, _K = torch.zeros(2, 2, 9, 3, 4)
_LA = -torch.ones(2, 9, 3, 4)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        # the wrong kind of argument: TypeError
        pytest.param({"q": [1.0]}, TypeError, "q must be a torch.Tensor, got list", id="q-list"),
        pytest.param({"log_a": 0.5}, TypeError, "log_a must be a torch.Tensor, got float", id="log_a-float"),
        pytest.param({"q": _Q.long()}, TypeError, "q must be a floating-point or complex", id="q-int"),
        pytest.param(
            {"v": torch.zeros(2, 9, 3, 5, dtype=torch.complex64)}, TypeError, "v must be a real", id="v-cplx"
        ),
        pytest.param({"k": _K.double()}, TypeError, "k has dtype torch.float64 but q has", id="k-f64"),
        pytest.param({"log_a": _LA.double()}, TypeError, "log_a has dtype torch.float64", id="log_a-f64"),
        pytest.param(
            {"initial_state": [[0.0]]}, TypeError, "initial_state must be a torch.Tensor", id="h0-list"
        ),
        pytest.param(
            {"initial_state": torch.zeros(2, 3, 4, 5, dtype=torch.int32)},
            TypeError,
            "initial_state must be a floating-point or complex",
            id="h0-int",
        ),
        pytest.param({"chunk_size": "abc"}, TypeError, "chunk_size must be a positive int", id="chunk-str"),
        pytest.param({"chunk_size": 8.0}, TypeError, "chunk_size must be a positive int", id="chunk-float"),
        pytest.param({"chunk_size": True}, TypeError, "chunk_size must be a positive int", id="chunk-bool"),
        pytest.param({"scale": "0.5"}, TypeError, "scale must be a float or None", id="scale-str"),
        pytest.param(
            {"scale": torch.tensor(0.5)}, TypeError, "scale must be a float or None", id="scale-tensor"
        ),
        pytest.param(
            {"output_final_state": 1}, TypeError, "output_final_state must be a bool", id="final-int"
        ),
        pytest.param(
            {"output_final_state": "yes"}, TypeError, "output_final_state must be a bool", id="final-str"
        ),
        # the right kind, a bad value: ValueError
        pytest.param({"chunk_size": 0}, ValueError, "chunk_size must be a positive int, got 0", id="chunk-0"),
        pytest.param(
            {"chunk_size": -4}, ValueError, "chunk_size must be a positive int, got -4", id="chunk-neg"
        ),
        pytest.param({"mode": "fft"}, ValueError, "mode must be one of 'chunk', 'recurrent'", id="mode"),
        pytest.param({"scale": float("inf")}, ValueError, "scale must be finite", id="scale-inf"),
        pytest.param({"k": _K[..., :3]}, ValueError, "k must have the shape of q", id="k-shape"),
        pytest.param(
            {"initial_state": torch.zeros(2, 3, 4, 4)},
            ValueError,
            "initial_state must have shape",
            id="h0-shape",
        ),
        pytest.param({"a": _LA.exp()}, ValueError, "exactly one of a= or log_a=", id="a-and-log_a"),
        pytest.param({"log_a": _LA.to("meta")}, ValueError, "log_a is on meta but q is on cpu", id="device"),
        pytest.param(
            {"mode": "scan", "chunk_size": 8},
            ValueError,
            "chunk_size applies to mode='chunk'",
            id="chunk-scan",
        ),
    ],
)
def test_wrong_kind_is_type_error_bad_value_is_value_error(overrides: dict, error: type, match: str) -> None:
    """One convention (gateloop._validation): wrong type or dtype -> TypeError; bad value -> ValueError."""
    call = {"q": _Q, "k": _K, "v": torch.zeros(2, 9, 3, 5), "log_a": _LA, **overrides}
    with pytest.raises(error, match=re.escape(match)):
        gate_loop(**call)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        pytest.param({"q": (1.0,)}, TypeError, "q must be a torch.Tensor, got tuple", id="q-tuple"),
        pytest.param(
            {"state": torch.zeros(2, 3, 4, 5, dtype=torch.int64)},
            TypeError,
            "state must be a",
            id="state-int",
        ),
        pytest.param({"state": "h"}, TypeError, "state must be a torch.Tensor, got str", id="state-str"),
        pytest.param({"scale": "1"}, TypeError, "scale must be a float or None", id="scale-str"),
        pytest.param(
            {"state": torch.zeros(2, 3, 4, 4)}, ValueError, "state must have shape", id="state-shape"
        ),
        pytest.param({"scale": float("nan")}, ValueError, "scale must be finite", id="scale-nan"),
        pytest.param({"log_a": None}, ValueError, "exactly one of a= or log_a=", id="no-transitions"),
    ],
)
def test_step_wrong_kind_is_type_error_bad_value_is_value_error(
    overrides: dict, error: type, match: str
) -> None:
    q, k = torch.zeros(2, 2, 3, 4)
    call = {
        "q": q,
        "k": k,
        "v": torch.zeros(2, 3, 5),
        "log_a": torch.zeros(2, 3, 4),
        "state": None,
        **overrides,
    }
    with pytest.raises(error, match=re.escape(match)):
        gate_loop_step(**call)


def test_step_errors() -> None:
    q, k = torch.randn(2, 2, 3, 4)
    v = torch.randn(2, 3, 5)
    with err("q must have shape [B, H, dk] (one token, 3 dims)"):
        gate_loop_step(q[None], k, v, log_a=torch.zeros(2, 3, 4), state=None)
    with err("state must have shape [B, H, dk, dv] = (2, 3, 4, 5)"):
        gate_loop_step(q, k, v, log_a=torch.zeros(2, 3, 4), state=torch.zeros(2, 3, 4, 4))
    with err("log_a must have shape [B, H, dk] = (2, 3, 4)"):
        gate_loop_step(q, k, v, log_a=torch.zeros(2, 3, 2), state=None)


def test_negative_real_a_rotates_by_pi() -> None:
    p = make_problem(B=1, L=30, H=2, dk=3, dv=2, complex_a=False, use_log=False, seed=8)
    a = p.trans * torch.where(torch.rand(p.trans.shape) < 0.5, -1.0, 1.0).double()
    ys = [
        gate_loop(p.q, p.k, p.v, a, mode=m, initial_state=p.h0)[0]
        for m in ("recurrent", "chunk", "attention")
    ]
    assert_close("chunk", ys[0], ys[1], 1e-10)
    assert_close("attention", ys[0], ys[2], 1e-10)


def test_core_import_stays_light() -> None:
    """`import gateloop` must not load plotting, tokenizers or optional integrations."""
    import subprocess
    import sys

    heavy = ("matplotlib", "tiktoken", "tokenizers", "transformers", "jax", "pyarrow", "onnx", "onnxruntime")
    # gateloop.export.onnx is what a user imports to export: onnx and onnxruntime load only when called
    imports = "import sys, gateloop, gateloop.export.onnx"
    code = f"{imports}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_chunk_size_longer_than_the_sequence_is_the_sequence() -> None:
    """chunk_size 10**9 at L 16 runs as one chunk of 16 (it used to pad to 10**9 and allocate ~32 GB)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 16, 2, 4, generator=g) for _ in range(3))
    log_a = -torch.rand(1, 16, 2, 4, generator=g)
    y_huge, _ = gate_loop(q, k, v, log_a=log_a, chunk_size=10**9)
    y_one, _ = gate_loop(q, k, v, log_a=log_a, chunk_size=16)
    assert torch.equal(y_huge, y_one)
