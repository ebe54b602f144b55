"""Non-finite values stay causal: a NaN or Inf at position t never changes anything before t.

The rule tested, for every mode and path of ``gate_loop``: one scalar of q, k, v, log|a| or the
phase at position t (batch row 0, head 1, first feature) is set to NaN or +Inf (-Inf in log|a| is
the legal a = 0), with t inside a chunk and at the last position and L not a multiple of the
chunk length. Then

* outputs at positions < t are bit-identical (``torch.equal``) to the clean run's;
* with the loss Σ_{n<t} <y_n, g_n> over positions < t only (``y[:, :t]``, so the cotangent of
  every later output is exactly 0), the gradients w.r.t. q, k, v, log_a at positions < t and
  w.r.t. the initial state are bit-identical to the clean run's. Only such a loss makes this a
  property: a loss over positions >= t legitimately sends their gradient to earlier inputs;
* the poison is not dropped: the poisoned head's output at t is not finite.

The problems keep every chunk within the safe range: a gate that decides whether its chunk is
computed exactly changes earlier rows' rounding: the documented exception, tested in
``test_gate_that_decides_a_chunks_exactness_changes_only_rounding``.

``docs/numerics.md``, 'Non-finite inputs', describes how the modes guarantee it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor

from gateloop import gate_loop, gate_loop_step
from gateloop.models import GateLoopConfig, GateLoopLM
from gateloop.ops._extension import load_extension

from helpers import pure_pytorch

B, L, H = 2, 70, 2  # 70 = 4 chunks of 16 + 6: the last chunk is partial
CHUNK = 16
POSITIONS = (37, L - 1)  # inside the third chunk (37 = 2·16 + 5); the last position
VALUES = {"nan": math.nan, "inf": math.inf}


@dataclass(frozen=True)
class Path:
    """One way through ``gate_loop``: a mode, the problem's shape and kind, and the dispatch."""

    mode: str
    dk: int = 4
    dv: int = 4
    per_head: bool = False
    complex_a: bool = True
    complex_qk: bool = False
    with_h0: bool = True
    dtype: torch.dtype = torch.float64
    fallback: bool = False  # the pure-PyTorch path (GATELOOP_NO_EXTENSION), see helpers.pure_pytorch
    direct_a: bool = False  # pass a = exp(log_a) as ``a=`` (its real and imaginary parts poisoned)
    kwargs: dict[str, Any] = field(default_factory=dict)


PATHS = {
    "chunk-complex-a": Path("chunk", kwargs={"chunk_size": CHUNK}),
    "chunk-real-a": Path("chunk", complex_a=False, with_h0=False, kwargs={"chunk_size": CHUNK}),
    "chunk-per-head": Path("chunk", per_head=True, kwargs={"chunk_size": CHUNK}),
    "chunk-complex-qk": Path("chunk", complex_qk=True, kwargs={"chunk_size": CHUNK}),
    "chunk-float32": Path("chunk", dtype=torch.float32, kwargs={"chunk_size": CHUNK}),
    "chunk-default-size": Path("chunk", with_h0=False),  # one partial chunk of 64 + 6
    "siso-kernel-complex-a": Path("chunk", dk=1, dv=1),
    "siso-kernel-real-a": Path("chunk", dk=1, dv=1, complex_a=False, dtype=torch.float32),
    "siso-pytorch-complex-a": Path("chunk", dk=1, dv=1, fallback=True, kwargs={"chunk_size": CHUNK}),
    "siso-pytorch-real-a": Path(
        "chunk", dk=1, dv=1, complex_a=False, fallback=True, kwargs={"chunk_size": CHUNK}
    ),
    "chunk-direct-a": Path("chunk", direct_a=True, kwargs={"chunk_size": CHUNK}),
    "siso-kernel-direct-a": Path("chunk", dk=1, dv=1, direct_a=True),
    "recurrent": Path("recurrent"),
    "recurrent-direct-a": Path("recurrent", direct_a=True),
    "recurrent-real": Path("recurrent", complex_a=False, with_h0=False, dtype=torch.float32),
    "scan": Path("scan"),
    "attention": Path("attention"),
    "attention-per-head": Path("attention", per_head=True, complex_a=False, with_h0=False),
    "softmax": Path("softmax", with_h0=False),
    "softmax-per-head": Path("softmax", per_head=True, with_h0=False),
}

TARGETS = ("q", "k", "v", "log|a|", "phase")


def _inputs(path: Path) -> dict[str, Tensor]:
    """Random float64 leaves of the problem (log_a with |a| ~ U(0, 1)) and a cotangent g for y."""
    g = torch.Generator().manual_seed(hash((path.dk, path.per_head, path.complex_a, path.complex_qk)) % 1000)
    f64 = torch.float64
    q, k = (torch.randn(B, L, H, path.dk, generator=g, dtype=f64) for _ in range(2))
    if path.complex_qk:
        q = torch.complex(q, torch.randn(B, L, H, path.dk, generator=g, dtype=f64))
        k = torch.complex(k, torch.randn(B, L, H, path.dk, generator=g, dtype=f64))
    d = 1 if path.per_head else path.dk
    log_mag = torch.log(torch.rand(B, L, H, d, generator=g, dtype=f64))
    phase = (2 * torch.rand(B, L, H, d, generator=g, dtype=f64) - 1) * math.pi
    out = {
        "q": q,
        "k": k,
        "v": torch.randn(B, L, H, path.dv, generator=g, dtype=f64),
        "log_a": torch.complex(log_mag, phase) if path.complex_a else log_mag,  # or a itself: direct_a
        "gy": torch.randn(B, L, H, path.dv, generator=g, dtype=f64),
    }
    if path.with_h0:
        shape = (B, H, path.dk, path.dv)
        out["h0"] = torch.complex(
            torch.randn(*shape, generator=g, dtype=f64), torch.randn(*shape, generator=g, dtype=f64)
        )
    if path.direct_a:
        out["log_a"] = torch.exp(out["log_a"])
    return {name: _cast(t, path.dtype) for name, t in out.items()}


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    if t.is_complex():
        return t.to(torch.complex64 if dtype == torch.float32 else torch.complex128)
    return t.to(dtype)


def _poison(inputs: dict[str, Tensor], target: str, t: int, value: float) -> dict[str, Tensor]:
    """A copy of ``inputs`` with one scalar at position t (batch 0, head 1, feature 0) set to ``value``."""
    name = {"log|a|": "log_a", "phase": "log_a"}.get(target, target)
    x = inputs[name].clone()
    part = (x.imag if target == "phase" else x.real) if x.is_complex() else x  # views: writes reach x
    part[0, t, 1, 0] = value
    return {**inputs, name: x}


def _run(path: Path, inputs: dict[str, Tensor], t: int) -> tuple[Tensor, dict[str, Tensor]]:
    """y, and the gradients of Σ_{n<t} <y_n, g_n> w.r.t. every leaf."""
    leaves = {n: x.detach().clone().requires_grad_(True) for n, x in inputs.items() if n != "gy"}
    with pure_pytorch(path.fallback):
        y, _ = gate_loop(
            leaves["q"],
            leaves["k"],
            leaves["v"],
            **{"a" if path.direct_a else "log_a": leaves["log_a"]},
            mode=path.mode,  # type: ignore[arg-type]
            initial_state=leaves.get("h0"),
            output_final_state=path.mode != "softmax",
            **path.kwargs,
        )
    loss = (y[:, :t] * inputs["gy"][:, :t]).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return y.detach(), dict(zip(leaves, grads, strict=True))


_CLEAN: dict[tuple[str, int], tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]] = {}


def _clean(path_id: str, t: int) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
    if (path_id, t) not in _CLEAN:
        inputs = _inputs(PATHS[path_id])
        _CLEAN[path_id, t] = (inputs, *_run(PATHS[path_id], inputs, t))
    return _CLEAN[path_id, t]


def _check_kernel_path(path: Path) -> None:
    if (
        path.dk == 1
        and not path.fallback
        and (os.environ.get("GATELOOP_NO_EXTENSION") or load_extension("siso_scan.cpp") is None)
    ):
        pytest.skip("the compiled SISO kernel is not available here")


CASES = [
    pytest.param(path_id, target, value, t, id=f"{path_id}-{target}-{value}-t{t}")
    for path_id, path in PATHS.items()
    for target in TARGETS
    for value in VALUES
    for t in POSITIONS
    if not (target == "phase" and not path.complex_a)
]


@pytest.mark.parametrize(("path_id", "target", "value", "t"), CASES)
def test_nonfinite_input_does_not_reach_earlier_positions(
    path_id: str, target: str, value: str, t: int
) -> None:
    path = PATHS[path_id]
    _check_kernel_path(path)
    inputs, y_clean, g_clean = _clean(path_id, t)
    y, grads = _run(path, _poison(inputs, target, t, VALUES[value]), t)
    assert torch.equal(y[:, :t], y_clean[:, :t]), "outputs before t changed"
    assert not torch.isfinite(y[0, t, 1]).all(), "the non-finite input vanished from its own position"
    for name, grad in grads.items():
        before = grad if name == "h0" else grad[:, :t]
        clean = g_clean[name] if name == "h0" else g_clean[name][:, :t]
        assert torch.equal(before, clean), f"gradient w.r.t. {name} before t changed"


@pytest.mark.parametrize(("dk", "fallback"), [(4, False), (1, True)], ids=["multi-head", "siso-pytorch"])
def test_gate_that_decides_a_chunks_exactness_changes_only_rounding(dk: int, fallback: bool) -> None:
    """The one exception (docs/numerics.md, 'Non-finite inputs'): the chunked forms compute a
    chunk's diagonal block exactly when the chunk's whole decay range exceeds the safe range,
    factorised otherwise, and the two differ in rounding. Here the clean gate at t is what makes
    its chunk exceed the float32 range (60); set aside (NaN), it does not. Earlier chunks stay
    bit-identical; the rows of t's chunk before t, and gradients, only move by rounding."""
    path = Path(
        "chunk",
        dk=dk,
        dv=dk,
        complex_a=False,
        with_h0=False,
        dtype=torch.float32,
        fallback=fallback,
        kwargs={"chunk_size": CHUNK},
    )
    t = 40  # in the third chunk of 16 (32..47)
    log_mag = torch.full((B, L, H, dk), -0.05)
    log_mag[:, 32:t] = -3.0  # decay range 24 before t
    log_mag[:, t] = -30.0  # 54 at t
    log_mag[:, t + 1 : 48] = -1.5  # 64.5 at the chunk's end: beyond the float32 safe range (60)
    inputs = {**_inputs(path), "log_a": log_mag}
    y_clean, g_clean = _run(path, inputs, t)
    poisoned = log_mag.clone()
    poisoned[:, t] = math.nan  # every head and key: nothing at t left to push the chunk over
    y, grads = _run(path, {**inputs, "log_a": poisoned}, t)
    assert torch.equal(y[:, :32], y_clean[:, :32])
    torch.testing.assert_close(y[:, :t], y_clean[:, :t], rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad[:, :t], g_clean[name][:, :t], rtol=1e-4, atol=1e-5)


def test_step_is_causal() -> None:
    """Decoding token by token: a poisoned token leaves the outputs before it as they were."""
    inputs = _inputs(Path("recurrent"))
    t = 5
    outs = []
    for poisoned in (False, True):
        x = _poison(inputs, "v", t, math.nan) if poisoned else inputs
        state, ys = inputs["h0"], []
        for n in range(t + 2):
            y, state = gate_loop_step(
                x["q"][:, n], x["k"][:, n], x["v"][:, n], log_a=x["log_a"][:, n], state=state
            )
            ys.append(y)
        outs.append(torch.stack(ys, dim=1))
    assert torch.equal(outs[1][:, :t], outs[0][:, :t])
    assert not torch.isfinite(outs[1][0, t:, 1]).all()


def _assert_inf_in_last_token_stays_there(model: torch.nn.Module, ids: Tensor, **kwargs: Tensor) -> None:
    """One Inf in the last token's embedding: every earlier logit finite and bit-identical to the
    clean run's, the last token's not finite."""
    with torch.no_grad():
        clean = model(ids, **kwargs)

        def poison_last(module: torch.nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
            out = out.clone()
            out[:, -1, 0] = math.inf
            return out

        handle = model.embed.register_forward_hook(poison_last)
        try:
            poisoned = model(ids, **kwargs)
        finally:
            handle.remove()
    assert torch.isfinite(poisoned[:, :-1]).all()
    assert torch.equal(poisoned[:, :-1], clean[:, :-1])
    assert not torch.isfinite(poisoned[:, -1]).all()


@pytest.mark.parametrize(
    ("mode", "n_head"),
    [("chunk", 4), ("recurrent", 4), ("scan", 4), ("attention", 4), ("chunk", 32)],
    ids=["chunk", "recurrent", "scan", "attention", "chunk-siso"],
)
def test_lm_inf_at_the_last_position_keeps_earlier_logits(mode: str, n_head: int) -> None:
    """A GateLoopLM (4 heads of 8x8 states, or 32 SISO heads)."""
    torch.manual_seed(0)
    model = GateLoopLM(GateLoopConfig.tiny(mode=mode, n_head=n_head, chunk_size=32)).eval()
    _assert_inf_in_last_token_stays_there(model, torch.randint(0, 97, (2, 75)))


@pytest.mark.parametrize("padded", [False, True])
def test_transformer_inf_at_the_last_position_keeps_earlier_logits(padded: bool) -> None:
    """The Transformer baseline too: softmax attention's 0 * inf in the weighted sum is avoided."""
    from gateloop.models import TransformerConfig, TransformerLM

    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.tiny()).eval()
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[0, :3] = not padded  # a left-padded row takes the masked (non-causal-flag) attention path
    kwargs = {"attention_mask": mask} if padded else {}
    _assert_inf_in_last_token_stays_there(model, torch.randint(0, 97, (2, 40)), **kwargs)


def test_transformer_decoding_after_a_nonfinite_prompt_token_matches_the_full_forward() -> None:
    """The KV cache remembers that a key/value was non-finite (its stored copy is zeroed): every
    later step is non-finite, as in the full forward, and the positions before it stay clean."""
    from gateloop.models import TransformerConfig, TransformerLM

    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.tiny()).eval()
    ids = torch.randint(0, 97, (2, 12))

    def poison(module, args, out):  # row 0: an Inf at position 4 (prompt), row 1 stays clean
        out = out.clone()
        if out.shape[1] > 4:
            out[0, 4, 0] = math.inf
        return out

    handle = model.embed.register_forward_hook(poison)
    try:
        with torch.no_grad():
            full = model(ids)
            _, state = model(ids[:, :8], return_state=True)
            steps = []
            for t in range(8, 12):
                logits, state = model(ids[:, t : t + 1], state=state, return_state=True)
                steps.append(logits)
    finally:
        handle.remove()
    stepped = torch.cat(steps, dim=1)  # (2, 4, V)
    assert torch.isfinite(full[0, :4]).all() and not torch.isfinite(full[0, 4:]).any(dim=-1).any()
    assert not torch.isfinite(stepped[0]).all(dim=-1).any()  # every decoded logit row of row 0
    torch.testing.assert_close(stepped[1], full[1, 8:], rtol=1e-5, atol=1e-5)
