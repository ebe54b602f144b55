"""The GateLoop language model (paper App. C): embedding, GateLoop blocks, norm, head."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from gateloop.layers.gate_loop_layer import GateLoop
from gateloop.models.base import CausalModel
from gateloop.models.block import Block
from gateloop.models.config import GateLoopConfig


class GateLoopLM(CausalModel):
    """``forward(input_ids, *, state=None, return_state=False) -> logits [B, L, V]``.

    The state is a list with one complex ``[B, H, dk, dv]`` tensor per layer: O(1) memory per
    sequence however long the context. With ``output_vocab_size`` set it is a per-position tagger
    (Memory Horizon: logits over 50 classes from 6 input ids).

    Example:
        >>> model = GateLoopLM(GateLoopConfig.tiny())
        >>> ids = torch.randint(0, 97, (2, 10))
        >>> model(ids).shape
        torch.Size([2, 10, 97])
        >>> model.generate(ids, 5, temperature=0).shape
        torch.Size([2, 15])
    """

    config_class: ClassVar[type[GateLoopConfig]] = GateLoopConfig  # type: ignore[assignment]
    config: GateLoopConfig

    def __init__(
        self,
        config: GateLoopConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(config, device=device, dtype=dtype)
        for _ in range(config.n_layer):
            mixing = GateLoop(config.d_model, config.layer_options(), device=device, dtype=dtype)
            self.blocks.append(Block(mixing, config, device=device, dtype=dtype))
        self._init_embeddings()

    @torch.no_grad()
    def transition_magnitudes(self, inputs: Tensor) -> list[Tensor]:
        """|a| of every layer for one sequence ``inputs`` [L] (token ids): a list of [L, channels]
        tensors on the CPU, one per layer (the paper's Fig 5). Runs in eval mode (no dropout) and
        restores the model's training mode afterwards.

        Example:
            >>> model = GateLoopLM(GateLoopConfig.tiny())
            >>> [m.shape for m in model.transition_magnitudes(torch.randint(0, 97, (7,)))]
            [torch.Size([7, 32]), torch.Size([7, 32])]
        """
        captured: list[Tensor] = []

        def capture(layer: nn.Module, args: tuple[Tensor, ...], _out: object) -> None:
            # the hook sees the layer's own input (after norm1 in a pre-norm block)
            log_a = layer.log_transitions(args[0])  # type: ignore[operator]  # (1, L, H, d)
            # |a| = exp(Re log a): the phase does not change how fast the state decays
            captured.append(torch.exp(log_a.real)[0].flatten(1).cpu())  # (L, H * d)

        hooks = [block.time_mixing.register_forward_hook(capture) for block in self.blocks]
        was_training = self.training
        try:
            self.eval()
            self(inputs[None].to(self.embed.weight.device))  # (1, L) -> logits, discarded
        finally:
            for hook in hooks:
                hook.remove()
            self.train(was_training)
        return captured
