"""What every model of the harness shares: embedding, blocks and head, generation, checkpoints.

The block is ``gateloop.models.block``, the decoding loop ``gateloop.models.generation`` and the
checkpoint files ``gateloop.models.pretrained``; the methods here call them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gateloop._validation import INTEGER_DTYPES, check_tensor
from gateloop.models.config import ModelConfig
from gateloop.models.generation import generate
from gateloop.models.pretrained import load_weights, read_model_config, save_model


class CausalModel(nn.Module):
    """Token embedding -> blocks -> final norm -> head, with generation and checkpoints.

    Subclasses build ``self.blocks`` (each a ``Block``) from their config.
    """

    config_class: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(
        self,
        config: ModelConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        config.validate()
        self.config = config
        factory = {"device": device, "dtype": dtype}
        self.embed = nn.Embedding(config.vocab_size, config.d_model, **factory)
        self.blocks = nn.ModuleList()
        # pre-norm needs a final norm before the head; post-norm blocks already end normalised
        self.final_norm = (
            nn.LayerNorm(config.d_model, **factory) if config.norm_position == "pre" else nn.Identity()
        )
        # a tied head reuses embed.weight in forward (no second tensor, nothing shared to save)
        self.head = (
            None
            if config.tie_embeddings
            else nn.Linear(config.d_model, config.head_vocab_size, bias=False, **factory)
        )

    def _init_embeddings(self) -> None:
        with torch.no_grad():
            # N(0, 0.02) as GPT-2: unit-scale embeddings would swamp the residual stream at init
            nn.init.normal_(self.embed.weight, std=0.02)
            if self.head is not None:
                nn.init.normal_(self.head.weight, std=0.02)

    # ------------------------------------------------------------------ forward
    def check_input_ids(self, input_ids: object) -> None:
        """TypeError unless an integer tensor; ValueError unless [B, L], non-empty, in the vocabulary.

        The range check reads the ids' min and max back to the host (a device sync): callers that
        feed the model their own sampled ids check the prompt once and pass ``check_ids=False``.
        """
        input_ids = check_tensor("input_ids", input_ids, INTEGER_DTYPES)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape [B, L], got {tuple(input_ids.shape)}")
        if input_ids.numel() == 0:
            raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)})")
        if torch.compiler.is_compiling():
            # a value check is a data-dependent branch that would break the graph; the embedding
            # lookup still refuses an id out of range at run time
            return
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= self.config.vocab_size:
            vocab = self.config.vocab_size
            raise ValueError(
                f"input_ids must lie in [0, vocab_size = {vocab}), got values in [{low}, {high}]"
            )

    def hidden_states(
        self,
        input_ids: Tensor | None,
        *,
        state: list[Any] | None = None,
        return_state: bool = False,
        check_ids: bool = True,
        inputs_embeds: Tensor | None = None,
        every_layer: list[Tensor] | None = None,
        **masks: Any,
    ) -> tuple[Tensor, list[Any] | None]:
        """input_ids [B, L] (or ``inputs_embeds`` [B, L, d_model] in their place) -> final hidden
        states [B, L, d_model] (and per-layer states).

        ``check_ids=False`` skips ``check_input_ids`` (for ids already checked or sampled from
        this model's own head); ``logits`` turns any slice of the result into scores.
        ``every_layer``: a list that receives each block's input (the embeddings first) and the
        final normed output, n_layer + 1 tensors (Hugging Face's ``hidden_states``).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is not None:
            x = self._check_embeds(inputs_embeds)  # (B, L, d_model)
        else:
            if check_ids:
                self.check_input_ids(input_ids)
            x = self.embed(input_ids)  # (B, L, d_model)
        if state is not None:
            if not isinstance(state, (list, tuple)):
                raise TypeError(
                    f"state must be a list with one entry per layer (a previous call's state), "
                    f"got {type(state).__name__}"
                )
            if len(state) != len(self.blocks):
                raise ValueError(
                    f"state must hold one entry per layer ({len(self.blocks)}), got {len(state)}"
                )
        new_state: list[Any] = []
        for i, block in enumerate(self.blocks):
            if every_layer is not None:
                every_layer.append(x)
            layer_state = None if state is None else state[i]
            out = block(x, state=layer_state, return_state=return_state, **masks)
            if return_state:
                x, s = out
                new_state.append(s)
            else:
                x = out
        x = self.final_norm(x)
        if every_layer is not None:
            every_layer.append(x)
        return x, (new_state if return_state else None)

    def _check_embeds(self, inputs_embeds: object) -> Tensor:
        """``inputs_embeds`` if a non-empty tensor [B, L, d_model] of the embedding's dtype (what
        ``embed(input_ids)`` gives; another dtype would fail deep inside a block); else a clear error."""
        embeds = check_tensor("inputs_embeds", inputs_embeds, (self.embed.weight.dtype,))
        d_model = self.config.d_model
        if embeds.ndim != 3 or embeds.shape[-1] != d_model or embeds.numel() == 0:
            raise ValueError(
                f"inputs_embeds must have shape [B, L, d_model = {d_model}], got {tuple(embeds.shape)}"
            )
        return embeds

    def logits(self, hidden: Tensor) -> Tensor:
        if self.head is None:
            return F.linear(hidden, self.embed.weight)  # tied head
        return self.head(hidden)

    def forward(
        self,
        input_ids: Tensor,
        *,
        state: list[Any] | None = None,
        return_state: bool = False,
        attention_mask: Tensor | None = None,
        document_ids: Tensor | None = None,
        cu_seqlens: Tensor | None = None,
        context_parallel: Any = None,
    ) -> Tensor | tuple[Tensor, list[Any]]:
        """input_ids [B, L] -> logits [B, L, head vocab] (and the new per-layer state when asked).

        state: continue from a previous call's state (a cache for generation).
        attention_mask: bool [B, L], False on padding. document_ids: int [B, L] for packed rows.
        cu_seqlens: int [N+1] offsets of N sequences packed into a batch of one (B = 1); GateLoop
        states are then one per sequence.
        context_parallel: a process group whose ranks hold consecutive slices of each sequence,
        ``input_ids`` being this rank's (every GateLoop layer passes its state on exactly:
        ``gateloop.ops.context_parallel``).
        """
        given = (
            ("attention_mask", attention_mask),
            ("document_ids", document_ids),
            ("cu_seqlens", cu_seqlens),
            ("context_parallel", context_parallel),
        )
        masks = {k: v for k, v in given if v is not None}
        hidden, new_state = self.hidden_states(input_ids, state=state, return_state=return_state, **masks)
        logits = self.logits(hidden)
        return (logits, new_state) if return_state else logits  # type: ignore[return-value]

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """``gateloop.models.generation.generate`` on this model: [B, L] -> [B, L + max_new_tokens]."""
        return generate(
            self,
            input_ids,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            eos_token_id=eos_token_id,
            generator=generator,
            attention_mask=attention_mask,
        )

    # ------------------------------------------------------------------ checkpoints
    def num_parameters(self, *, non_embedding: bool = False, trainable_only: bool = False) -> int:
        """Parameters of the model, a tied embedding counted once.

        ``non_embedding``: without the embedding and the (untied) head, which depend on the
        vocabulary only and would hide differences in the blocks on a large vocabulary.
        ``trainable_only``: only those with ``requires_grad``.
        """
        embedding = [self.embed, *([self.head] if self.head is not None else [])]
        skip = {id(p) for module in embedding for p in module.parameters()} if non_embedding else set()
        kept = (p for p in self.parameters() if id(p) not in skip)
        return sum(p.numel() for p in kept if p.requires_grad or not trainable_only)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (no pickle) into ``directory``."""
        return save_model(self, directory)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> CausalModel:
        """Load a model saved by ``save_pretrained``: read its config, build it, ``load_weights``."""
        config = read_model_config(cls.config_class, directory)
        return load_weights(cls(config, device=device, dtype=dtype), directory)
