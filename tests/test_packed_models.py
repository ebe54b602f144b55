"""cu_seqlens at the layer and model level: a packed batch of one equals each sequence alone."""

from __future__ import annotations

import pytest
import torch

from gateloop.models import GateLoopConfig, GateLoopLM, TransformerConfig, TransformerLM

LENGTHS = (5, 17, 9)


@pytest.mark.parametrize(
    ("model_class", "config"),
    [
        (GateLoopLM, GateLoopConfig.tiny()),  # multi-dim heads
        (GateLoopLM, GateLoopConfig.tiny(n_head=32)),  # SISO heads
        (TransformerLM, TransformerConfig.tiny()),
    ],
    ids=["gateloop", "gateloop-siso", "transformer"],
)
def test_packed_equals_alone(model_class, config) -> None:
    torch.manual_seed(0)
    model = model_class(config).double().eval()
    rows = [torch.randint(0, config.vocab_size, (1, n)) for n in LENGTHS]
    packed = torch.cat(rows, dim=1)  # (1, 31)
    cu_seqlens = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    with torch.no_grad():
        logits = model(packed, cu_seqlens=cu_seqlens)
        alone = torch.cat([model(r) for r in rows], dim=1)
    torch.testing.assert_close(logits, alone, rtol=1e-10, atol=1e-10)
    if model_class is GateLoopLM:
        with torch.no_grad():
            _, states = model(packed, cu_seqlens=cu_seqlens, return_state=True)
            for i, row in enumerate(rows):
                _, own = model(row, return_state=True)
                for layer, (s, o) in enumerate(zip(states, own, strict=True)):
                    torch.testing.assert_close(s[i : i + 1], o, rtol=1e-10, atol=1e-10, msg=f"layer {layer}")


def test_packed_input_errors() -> None:
    model = GateLoopLM(GateLoopConfig.tiny())
    ids = torch.randint(0, 97, (2, 8))
    with pytest.raises(ValueError, match="B = 1"):
        model(ids, cu_seqlens=torch.tensor([0, 3, 8], dtype=torch.int32))
    with pytest.raises(ValueError, match="without document_ids"):
        model(ids[:1], cu_seqlens=torch.tensor([0, 3, 8]), document_ids=torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="must end at L = 8"):
        model(ids[:1], cu_seqlens=torch.tensor([0, 3, 7]))
