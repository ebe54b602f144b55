"""What the Triton-backend tests share: a run through ``gate_loop(backend=...)`` on the test device
with a problem's cotangents, and packed (``cu_seqlens``) problems with their float64 reference.

Import after ``triton_interpret`` (which must come before anything imports a kernel module).
"""

from __future__ import annotations

import itertools

import torch
import triton_interpret
from torch import Tensor

from gateloop import gate_loop, gate_loop_naive

from helpers import Problem, _collect, _leaves, make_problem

DEVICE = triton_interpret.DEVICE


def run_triton(
    p: Problem, dtype: torch.dtype = torch.float32, *, backend: str = "triton", **kw: object
) -> dict[str, Tensor]:
    """gate_loop(backend=backend) on ``DEVICE`` with ``p``'s cotangents; results on the CPU."""
    leaves = _leaves(p, dtype if dtype == torch.float32 else torch.float32)
    if dtype != torch.float32:  # q, k, v in the half dtype (transitions and states stay float32/complex64)
        for name in ("q", "k", "v"):
            leaves[name] = leaves[name].detach().to(dtype).requires_grad_(True)
    dev = {name: t.detach().to(DEVICE).requires_grad_(True) for name, t in leaves.items()}
    key = "log_a" if p.use_log else "a"
    y, final = gate_loop(
        dev["q"],
        dev["k"],
        dev["v"],
        initial_state=dev.get("h0"),
        output_final_state=True,
        backend=backend,  # type: ignore[arg-type]
        **{key: dev["trans"]},
        **kw,
    )
    out = _collect(y.cpu(), None if final is None else final.cpu(), dev, p)
    return {name: t.cpu() for name, t in out.items()}


def varlen_reference(p: Problem, offsets: list[int]) -> dict[str, Tensor]:
    """The float64 loop on each sequence with its own initial state; gradients by autograd."""
    leaves = _leaves(p, torch.float64)
    trans = leaves["trans"]
    a = torch.exp(trans) if p.use_log else trans
    ys, finals = [], []
    for i, (s, e) in enumerate(itertools.pairwise(offsets)):
        h0 = leaves["h0"][i : i + 1] if "h0" in leaves else None
        y, h = gate_loop_naive(
            leaves["q"][:, s:e], leaves["k"][:, s:e], leaves["v"][:, s:e], a[:, s:e], initial_state=h0
        )
        ys.append(y)
        finals.append(h)
    return _collect(torch.cat(ys, dim=1), torch.cat(finals, dim=0), leaves, p)


def varlen_problem(offsets: list[int], *, H: int = 2, d: int, seed: int, **kw: object) -> Problem:
    """Sequences packed at ``offsets`` (B = 1), each with its own initial state and cotangent."""
    p = make_problem(B=1, L=offsets[-1], H=H, dk=d, dv=d, seed=seed, **kw)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(seed)
    shape = (len(offsets) - 1, H, d, d)

    def crandn() -> Tensor:
        real, imag = (torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(2))
        return torch.complex(real, imag)

    p.h0, p.gh = crandn(), crandn()
    return p
