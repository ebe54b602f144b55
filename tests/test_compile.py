"""Whole models trace with ``torch.compile(fullgraph=True)``, forward and backward."""

from __future__ import annotations

import pytest
import torch

from gateloop.models import GateLoopConfig, GateLoopLM


@pytest.mark.slow
def test_siso_model_compiles_fullgraph_on_its_first_call() -> None:
    """The first call is the compiled one: the kernel's build/load is not traced (a constant to
    dynamo) and the ids' range check does not break the graph."""
    torch.manual_seed(0)
    model = GateLoopLM(GateLoopConfig.tiny(n_head=32))  # d_qk = 32 over 32 heads: SISO
    compiled = torch.compile(model, fullgraph=True)
    ids = torch.randint(0, 97, (2, 70))
    out = compiled(ids)
    out.pow(2).mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager = model(ids)
    eager.pow(2).mean().backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_train_with_compile_end_to_end(tmp_path) -> None:
    """`--train.compile true`: the compiled run logs the same losses as the eager one."""
    from gateloop.training import MetricsLogger

    from training_helpers import train_tiny

    overrides = {"train.epochs": 1, "train.eval_every_epochs": None}
    train_tiny(tmp_path / "eager", overrides=overrides)
    train_tiny(tmp_path / "compiled", overrides={**overrides, "train.compile": True})
    eager, compiled = (
        [r["loss"] for r in MetricsLogger(tmp_path / d).read() if "loss" in r] for d in ("eager", "compiled")
    )
    assert len(compiled) == 5
    assert compiled == pytest.approx(eager, rel=1e-4)
