"""The transition parametrisation (paper eq 24): a = f(α) · exp(i g(β)), produced as log a directly.

``log_magnitude`` gives log f(α) and ``phase`` gives g(β), two real tensors that the layer packs
into ``log a = log f(α) + i g(β)``; ``inverse_magnitude`` and ``inverse_phase`` invert them for
initialisation. Each magnitude activation returns log f(α) in a form that stays finite where the
gate saturates (``logsigmoid``, not ``log(sigmoid)``, which underflows to -inf in float32 below
α ≈ -88).
"""

from __future__ import annotations

import math
import typing
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

MagnitudeActivation = Literal["sigmoid", "exp_exp", "none"]
PhaseActivation = Literal["identity", "exp", "none"]
MAGNITUDE_ACTIVATIONS: tuple[str, ...] = typing.get_args(MagnitudeActivation)
PHASE_ACTIVATIONS: tuple[str, ...] = typing.get_args(PhaseActivation)


def log_magnitude(alpha: Tensor, activation: str) -> Tensor:
    """log f(α): sigmoid (the paper) -> logσ(α); exp_exp (LRU) -> -exp(α)."""
    if activation == "sigmoid":
        return F.logsigmoid(alpha)
    if activation == "exp_exp":
        return -torch.exp(alpha)
    raise ValueError(f"magnitude activation {activation!r} has no pre-activation")


def phase(beta: Tensor, activation: str) -> Tensor:
    """g(β): identity (the paper) or exp (LRU)."""
    if activation == "identity":
        return beta
    if activation == "exp":
        return torch.exp(beta)
    raise ValueError(f"phase activation {activation!r} has no pre-activation")


def inverse_magnitude(magnitude: Tensor, activation: str) -> Tensor:
    """α with f(α) = magnitude, for initialisation (computed in float64: logit near 1 cancels)."""
    r = magnitude.double()
    if activation == "sigmoid":
        return torch.log(r) - torch.log1p(-r)
    if activation == "exp_exp":
        return torch.log(-torch.log(r))
    raise ValueError(f"magnitude activation {activation!r} has no pre-activation")


def inverse_phase(theta: Tensor, activation: str) -> Tensor:
    """β with g(β) = theta, for initialisation (exp needs theta > 0)."""
    if activation == "identity":
        return theta.double()
    if activation == "exp":
        return torch.log(theta.double().clamp_min(1e-8))
    raise ValueError(f"phase activation {activation!r} has no pre-activation")


def uniform_ring(n: int, r_min: float, r_max: float, generator: torch.Generator | None = None) -> Tensor:
    """LRU's ring initialisation: magnitudes with r² uniform in [r_min², r_max²] (float64)."""
    u = torch.rand(n, dtype=torch.float64, generator=generator)
    return torch.sqrt(u * (r_max**2 - r_min**2) + r_min**2)


TWO_PI = 2 * math.pi


def initial_transitions(
    init: str,
    shape: tuple[int, int],
    magnitude_init: tuple[float, float],
    phase_init_max: float,
    phase_activation: str,
) -> tuple[Tensor, Tensor]:
    """Initial (|a|, phase), float64 of ``shape`` = (n_head, transitions per head), per ``init``
    (the inits ``GateLoopOptions`` documents); draws from torch's global generator."""
    H, d = shape
    lo, hi = magnitude_init
    if init == "uniform":
        magnitude = lo + (hi - lo) * torch.rand(H, d, dtype=torch.float64)
        theta = phase_init_max * (2 * torch.rand(H, d, dtype=torch.float64) - 1)
    elif init == "ring":
        magnitude = uniform_ring(H * d, lo, hi).view(H, d)
        theta = phase_init_max * torch.rand(H, d, dtype=torch.float64)
    elif init == "s4d_lin":
        # Δ log-uniform in [1e-3, 1e-1] per head (S4D's default dt range)
        log_dt = math.log(1e-3) + (math.log(1e-1) - math.log(1e-3)) * torch.rand(H, 1, dtype=torch.float64)
        dt = torch.exp(log_dt)
        n = torch.arange(d, dtype=torch.float64)[None, :]
        magnitude = torch.exp(-0.5 * dt).expand(H, d)
        theta = math.pi * n * dt  # (H, d)
    else:  # retnet
        # log1p keeps 1 - 2^(-5-h) exact for many heads, where it rounds to 1.0 in float32
        magnitude = torch.exp(torch.log1p(-(2.0 ** (-5.0 - torch.arange(H, dtype=torch.float64)))))
        magnitude = magnitude[:, None].expand(H, d)
        theta = (10000.0 ** (-torch.arange(d, dtype=torch.float64) / d))[None, :].expand(H, d)
    if phase_activation == "exp":
        # exp(β) > 0: fold the sampled phases into (0, max]; the sign of a rotation is arbitrary
        theta = theta.abs().clamp_min(1e-4)
    return magnitude, theta
