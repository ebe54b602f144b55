"""A restart of the state isolates non-finite values: a NaN or Inf before it reaches nothing after it.

Each sequence starts from its own state: a packed sequence (``cu_seqlens``) from zeros or its
``initial_state``, a hard reset (a = 0 for every key of a head) from nothing at all. So a NaN or
Inf in one sequence must leave every other sequence's outputs, final state and gradients as they
are, in every mode and path, whatever ``output_final_state`` says (it picks between one call with
resets and one call per sequence). Checked against the clean run (the same inputs without the bad
value): outputs and final states of the other sequences within 1e-12 (float64) — the log-space
modes floor log|a| = -inf at -80, e^-80 ≈ 2e-35, so they may differ in the last bits — and the
gradients of a loss over the other sequences alike.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from gateloop import gate_loop
from gateloop.models import GateLoopConfig, GateLoopLM

from helpers import pure_pytorch

OFFSETS = [0, 32, 64, 96]  # three sequences of 32
L, H = OFFSETS[-1], 2
RTOL, ATOL = 1e-12, 1e-12
PATHS = {  # id: (mode, dk = dv, fallback to pure PyTorch)
    "chunk": ("chunk", 4, False),
    "chunk-siso-kernel": ("chunk", 1, False),
    "chunk-siso-pytorch": ("chunk", 1, True),
    "recurrent": ("recurrent", 4, False),
    "scan": ("scan", 4, False),
    "attention": ("attention", 4, False),
}


def _inputs(d: int, bad: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(clean, poisoned) float64 leaves for B = 1; the poisoned copy has ``bad`` (a name) at
    position 10 of sequence 0, head 1, feature 0 set to NaN."""
    g = torch.Generator().manual_seed(7 + d)
    clean = {
        "q": torch.randn(1, L, H, d, generator=g, dtype=torch.float64),
        "k": torch.randn(1, L, H, d, generator=g, dtype=torch.float64),
        "v": torch.randn(1, L, H, d, generator=g, dtype=torch.float64),
        "log_a": torch.complex(
            torch.log(torch.rand(1, L, H, d, generator=g, dtype=torch.float64)),
            torch.randn(1, L, H, d, generator=g, dtype=torch.float64),
        ),
    }
    poisoned = {name: t.clone() for name, t in clean.items()}
    target = poisoned["log_a"].real if bad == "log|a|" else poisoned[bad]
    target[0, 10, 1, 0] = math.nan
    return clean, poisoned


def _run(
    mode: str, fallback: bool, x: dict[str, Tensor], *, packed: bool, final: bool
) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """y, the final state(s) and the gradients of a loss over sequences 1 and 2 only.

    packed: the sequences as ``cu_seqlens``; otherwise one batch row with hard resets (log|a| =
    -inf for every key) at the starts of sequences 1 and 2."""
    leaves = {name: t.detach().clone().requires_grad_(True) for name, t in x.items()}
    log_a = leaves["log_a"]
    kwargs: dict[str, object] = {}
    if packed:
        kwargs["cu_seqlens"] = torch.tensor(OFFSETS)
    else:
        starts = torch.zeros(1, L, 1, 1, dtype=torch.bool)
        starts[:, OFFSETS[1:-1]] = True
        log_a = torch.where(starts, torch.complex(torch.tensor(-math.inf), torch.tensor(0.0)), log_a)
    with pure_pytorch(fallback):
        y, state = gate_loop(
            leaves["q"], leaves["k"], leaves["v"], log_a=log_a, mode=mode, output_final_state=final, **kwargs
        )
    weights = torch.linspace(-1, 1, L, dtype=torch.float64)[None, :, None, None]
    loss = (y[:, OFFSETS[1] :] * weights[:, OFFSETS[1] :]).sum()
    if state is not None:
        loss = loss + state[1:].abs().sum() if packed else loss + state.abs().sum()
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))
    return y.detach(), None if state is None else state.detach(), grads


RESTARTS = [  # (packed, output_final_state): one call with resets, one call per sequence, one row
    pytest.param(True, False, id="cu_seqlens-one-call"),
    pytest.param(True, True, id="cu_seqlens-per-sequence"),
    pytest.param(False, True, id="hard-resets"),
]


@pytest.mark.parametrize(("packed", "final"), RESTARTS)
@pytest.mark.parametrize("bad", ["k", "v", "log|a|"])
@pytest.mark.parametrize("path_id", list(PATHS))
def test_nonfinite_value_stays_in_its_sequence(path_id: str, bad: str, packed: bool, final: bool) -> None:
    mode, d, fallback = PATHS[path_id]
    clean, poisoned = _inputs(d, bad)
    y0, s0, g0 = _run(mode, fallback, clean, packed=packed, final=final)
    y, s, grads = _run(mode, fallback, poisoned, packed=packed, final=final)
    rest = slice(OFFSETS[1], None)  # sequences 1 and 2
    assert torch.isfinite(y[:, rest]).all(), "the bad value crossed into a later sequence"
    torch.testing.assert_close(y[:, rest], y0[:, rest], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(y[:, :10], y0[:, :10], rtol=0, atol=0)  # before it: bit-identical
    assert not torch.isfinite(y[0, 10:32, 1]).all(), "the bad value vanished from its own sequence"
    if s is not None and packed:
        torch.testing.assert_close(s[1:], s0[1:], rtol=RTOL, atol=ATOL)
        assert not torch.isfinite(s[0]).all(), "sequence 0's final state lost the bad value"
    elif s is not None:
        torch.testing.assert_close(s, s0, rtol=RTOL, atol=ATOL)  # after the last restart: clean
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), f"gradient w.r.t. {name} not finite"
        torch.testing.assert_close(grad, g0[name], rtol=RTOL, atol=ATOL)


def test_inf_in_one_document_leaves_the_later_documents_of_the_row() -> None:
    """GateLoopLM with ``document_ids`` (SISO heads and 4-wide heads): an Inf embedding in
    document 0 leaves the logits of documents 1 and 2 finite and as in the clean run."""
    ids = torch.randint(0, 97, (2, 60), generator=torch.Generator().manual_seed(0))
    docs = torch.zeros(2, 60, dtype=torch.long)
    docs[:, 20:] = 1
    docs[:, 45:] = 2
    for n_head in (4, 32):
        torch.manual_seed(0)
        model = GateLoopLM(GateLoopConfig.tiny(n_head=n_head)).eval()

        def poison(module: torch.nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
            out = out.clone()
            out[0, 5, 0] = math.inf
            return out

        with torch.no_grad():
            clean = model(ids, document_ids=docs)
            handle = model.embed.register_forward_hook(poison)
            try:
                poisoned = model(ids, document_ids=docs)
            finally:
                handle.remove()
        assert torch.isfinite(poisoned[:, 20:]).all(), f"n_head {n_head}: the Inf crossed a document start"
        torch.testing.assert_close(poisoned[:, 20:], clean[:, 20:], rtol=1e-5, atol=1e-5)
        assert torch.equal(poisoned[:, :5], clean[:, :5])
        assert not torch.isfinite(poisoned[0, 5]).all()
