"""Shared test helpers: random GateLoop problems, the float64 reference and error metrics."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from gateloop import gate_loop, gate_loop_naive

# Tolerances on relative RMS error (rms(ref - out) / rms(ref)), shared by every test of an op
# against the float64 reference.
TOL_F64 = 1e-10
# float32: ~1e-6 typical; the bound covers sums over 257 steps of 64x64 states and the
# factorised chunk decays (relative error <= 2 * 60 * eps32 = 7e-6 per term)
TOL_F32 = 1e-4


def _log_error(name: str, err: float, tol: float) -> None:
    """With $GATELOOP_ERROR_LOG set, append the measured error to that JSONL file (one line per
    check, with the test's id): ``tests/error_table.py`` turns it into a table of worst errors."""
    path = os.environ.get("GATELOOP_ERROR_LOG")
    if path:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, "quantity": name, "error": err, "tolerance": tol}) + "\n")


def rel_rms(ref: Tensor, out: Tensor) -> float:
    """rms(ref - out) / rms(ref), computed in float64 (complex tensors by modulus)."""
    ref = ref.detach().to(torch.complex128 if ref.is_complex() else torch.float64)
    out = out.detach().to(ref.dtype)
    num = (ref - out).abs().pow(2).mean().sqrt()
    den = ref.abs().pow(2).mean().sqrt()
    return float(num / den) if den > 0 else float(num)


def assert_close(name: str, ref: Tensor, out: Tensor, tol: float) -> None:
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(torch.view_as_real(out) if out.is_complex() else out).all(), f"{name}: non-finite"
    err = rel_rms(ref, out)
    _log_error(name, err, tol)
    assert err <= tol, f"{name}: relative RMS error {err:.3e} > {tol:.0e}"


@dataclass
class Problem:
    """A float64 GateLoop problem: inputs, and random cotangents for y and the final state."""

    q: Tensor
    k: Tensor
    v: Tensor
    trans: Tensor  # a or log_a
    use_log: bool
    h0: Tensor | None
    gy: Tensor
    gh: Tensor


def make_problem(
    *,
    B: int = 2,
    L: int = 17,
    H: int = 2,
    dk: int = 4,
    dv: int = 4,
    per_head: bool = False,
    complex_a: bool = True,
    complex_qk: bool = False,
    regime: str = "uniform",
    use_log: bool = True,
    with_h0: bool = True,
    seed: int = 0,
) -> Problem:
    """Random inputs; ``regime`` sets the gate magnitudes:

    uniform: |a| ~ U(0, 1);  near_one: 1 - |a| ~ U(0, 1e-6);  near_zero: |a| ~ 10^U(-12, -1) with
    exact zeros at ~10% of positions;  strong: |a| ~ U(0, 0.5);  mixed: uniform with 10% exact zeros.
    Phases ~ U(-π, π) when complex_a.
    """
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=f64)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g, dtype=f64)

    q, k = randn(B, L, H, dk), randn(B, L, H, dk)
    if complex_qk:
        q, k = torch.complex(q, randn(B, L, H, dk)), torch.complex(k, randn(B, L, H, dk))
    v = randn(B, L, H, dv)
    d = 1 if per_head else dk
    shape = (B, L, H, d)
    if regime == "uniform":
        log_mag = torch.log(rand(*shape).clamp_min(1e-300))
    elif regime == "near_one":
        log_mag = torch.log1p(-1e-6 * rand(*shape))
    elif regime == "strong":
        log_mag = torch.log(0.5 * rand(*shape).clamp_min(1e-300))
    elif regime == "near_zero":
        log_mag = (-12 + 11 * rand(*shape)) * math.log(10)
        log_mag = torch.where(rand(*shape) < 0.1, torch.full_like(log_mag, -math.inf), log_mag)
    elif regime == "mixed":
        log_mag = torch.log(rand(*shape).clamp_min(1e-300))
        log_mag = torch.where(rand(*shape) < 0.1, torch.full_like(log_mag, -math.inf), log_mag)
    else:
        raise ValueError(regime)
    phase = (2 * rand(*shape) - 1) * math.pi
    if use_log:
        trans = torch.complex(log_mag, phase) if complex_a else log_mag
    else:
        trans = torch.polar(torch.exp(log_mag), phase) if complex_a else torch.exp(log_mag)
    h0 = torch.complex(randn(B, H, dk, dv), randn(B, H, dk, dv)) if with_h0 else None
    gy = randn(B, L, H, dv)
    gh = torch.complex(randn(B, H, dk, dv), randn(B, H, dk, dv))
    return Problem(q, k, v, trans, use_log, h0, gy, gh)


def _leaves(p: Problem, dtype: torch.dtype) -> dict[str, Tensor]:
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64

    def cast(t: Tensor) -> Tensor:
        return t.to(cdtype if t.is_complex() else dtype).detach().requires_grad_(True)

    leaves = {"q": cast(p.q), "k": cast(p.k), "v": cast(p.v), "trans": cast(p.trans)}
    if p.h0 is not None:
        leaves["h0"] = cast(p.h0)
    return leaves


def _loss(y: Tensor, final: Tensor | None, p: Problem) -> Tensor:
    loss = (y.double() * p.gy).sum()
    if final is not None:
        f = final.to(torch.complex128)
        loss = loss + (f.real * p.gh.real).sum() + (f.imag * p.gh.imag).sum()
    return loss


def _collect(y: Tensor, final: Tensor | None, leaves: dict[str, Tensor], p: Problem) -> dict[str, Tensor]:
    _loss(y, final, p).backward()
    out = {"y": y.detach()}
    if final is not None:
        out["final_state"] = final.detach()
    for name, t in leaves.items():
        assert t.grad is not None, f"no gradient reached {name}"
        out[f"grad_{name}"] = t.grad
    return out


def run_reference(p: Problem, *, with_final: bool = True) -> dict[str, Tensor]:
    """The float64 naive loop, with gradients from autograd through it."""
    leaves = _leaves(p, torch.float64)
    trans = leaves["trans"]
    a = torch.exp(trans) if p.use_log else trans
    y, final = gate_loop_naive(leaves["q"], leaves["k"], leaves["v"], a, initial_state=leaves.get("h0"))
    return _collect(y, final if with_final else None, leaves, p)


@contextmanager
def pure_pytorch(enabled: bool = True) -> Iterator[None]:
    """Within the block, ``gate_loop`` takes its pure-PyTorch paths (no compiled kernels)."""
    old = os.environ.get("GATELOOP_NO_EXTENSION")
    if enabled:
        os.environ["GATELOOP_NO_EXTENSION"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("GATELOOP_NO_EXTENSION", None)
        else:
            os.environ["GATELOOP_NO_EXTENSION"] = old


def run_mode(
    p: Problem,
    mode: str,
    dtype: torch.dtype,
    *,
    with_final: bool = True,
    op: Callable[..., tuple[Tensor, Tensor | None]] = gate_loop,
    **kw: object,
) -> dict[str, Tensor]:
    """``mode`` is a ``gate_loop`` mode, or "chunk-pytorch": chunk without the compiled kernels.

    ``op`` is ``gate_loop`` or a wrapper of it (e.g. ``torch.compile(gate_loop)``)."""
    leaves = _leaves(p, dtype)
    key = "log_a" if p.use_log else "a"
    with pure_pytorch(mode.endswith("-pytorch")):
        y, final = op(
            leaves["q"],
            leaves["k"],
            leaves["v"],
            mode=mode.removesuffix("-pytorch"),
            initial_state=leaves.get("h0"),
            output_final_state=with_final,
            **{key: leaves["trans"]},
            **kw,
        )
        return _collect(y, final, leaves, p)


def compare(ref: dict[str, Tensor], out: dict[str, Tensor], tol: float, skip: tuple[str, ...] = ()) -> None:
    for name, r in ref.items():
        if name in skip:
            continue
        assert name in out, f"missing {name}"
        assert_close(name, r, out[name], tol)
