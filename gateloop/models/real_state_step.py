"""The one-token decoding step of a GateLoop LM on real tensors only, for ONNX and other runtimes
without complex numbers.

``RealStateDecodeStep(model)(input_ids [B], state [n_layer, B, H, dk, dv, 2]) -> (logits [B, V],
new state)``: the same computation as ``generation.decode_step`` (embedding, each block around
``GateLoop.step_real``, final norm, head), the complex state of every layer stored as its (real,
imaginary) parts and stacked into one tensor so that a runtime carries a single state input and
output. ``real_state`` / ``complex_state`` convert between it and the model's own list of complex
states (a prefill's cache), ``zero_real_state`` is the state before the first token.

Example:
    >>> from gateloop.models import GateLoopConfig, GateLoopLM
    >>> model = GateLoopLM(GateLoopConfig.tiny()).eval()
    >>> step = RealStateDecodeStep(model)
    >>> logits, state = step(torch.tensor([3, 5]), zero_real_state(model, 2))
    >>> logits.shape, state.shape
    (torch.Size([2, 97]), torch.Size([2, 2, 4, 8, 8, 2]))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gateloop.layers.gate_loop_layer import GateLoop
from gateloop.models.gateloop_lm import GateLoopLM


class RealStateDecodeStep(nn.Module):
    """A GateLoop LM's decoding step with the stacked real state (see the module docstring).

    Holds ``model`` (its parameters are shared, not copied). For a deterministic step put the
    model in eval mode first (dropout).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, GateLoopLM):
            raise TypeError(
                "RealStateDecodeStep needs a GateLoopLM (a constant-size recurrent state), got "
                f"{type(model).__name__}: a Transformer's KV cache grows with every token"
            )
        self.model = model

    def forward(self, input_ids: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """input_ids int(B), state r(n_layer B H dk dv 2) -> logits r(B V), new state (same shape)."""
        x = self.model.embed(input_ids)  # (B, d_model)
        new_states = []
        for block, layer_state in zip(self.model.blocks, state.unbind(0), strict=True):
            mixing = block.time_mixing
            assert isinstance(mixing, GateLoop)
            mixed, new_state = mixing.step_real(block.mixing_input(x), layer_state)  # (B, d_model)
            x = block.after_mixing(x, mixed)  # (B, d_model)
            new_states.append(new_state)
        logits = self.model.logits(self.model.final_norm(x))  # (B, V)
        return logits, torch.stack(new_states)  # (B, V), (n_layer, B, H, dk, dv, 2)


def state_shape(model: GateLoopLM, batch_size: int) -> tuple[int, ...]:
    """(n_layer, B, H, dk, dv, 2): the stacked real state's shape for ``batch_size`` rows."""
    layer = model.blocks[0].time_mixing
    assert isinstance(layer, GateLoop)
    return (len(model.blocks), batch_size, layer.n_head, layer.head_qk, layer.head_v, 2)


def zero_real_state(model: GateLoopLM, batch_size: int) -> Tensor:
    """The state before the first token: zeros of ``state_shape`` in the model's dtype and device.

    (The complex step's ``state=None`` is the same zero state: h' = a ⊙ 0 + kᵀv.)"""
    weight = model.embed.weight
    return torch.zeros(state_shape(model, batch_size), dtype=weight.dtype, device=weight.device)


def real_state(states: list[Tensor]) -> Tensor:
    """The model's per-layer complex states c(B H dk dv) -> the stacked real r(n_layer B H dk dv 2)."""
    return torch.stack([torch.view_as_real(s.resolve_conj()) for s in states])


def complex_state(state: Tensor) -> list[Tensor]:
    """The stacked real state r(n_layer B H dk dv 2) -> one complex c(B H dk dv) per layer."""
    if state.ndim != 6 or state.shape[-1] != 2:
        raise ValueError(f"state must have shape [n_layer, B, H, dk, dv, 2], got {tuple(state.shape)}")
    return [torch.view_as_complex(s.contiguous()) for s in state.unbind(0)]
