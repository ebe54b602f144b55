"""``GateLoopForCausalLM`` (and ``GateLoopTransformerForCausalLM``): Hugging Face ``PreTrainedModel``
+ ``GenerationMixin`` wrappers around our own ``GateLoopLM`` / ``TransformerLM`` (``self.model``),
so ``from_pretrained``, ``generate`` (greedy, sampling, top-k/top-p, beam search, streamers),
``labels`` -> ``loss`` and lm-eval's ``--model hf`` drive the library's model code directly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from gateloop.file_errors import read_json_object
from gateloop.hf.cache import GateLoopCache
from gateloop.hf.configuration import GateLoopHFConfig, GateLoopTransformerHFConfig
from gateloop.hf.initialization import initialize_missing
from gateloop.hf.packing import LOSS_KEYWORDS, check_no_unused, packing_masks
from gateloop.hf.padding import new_token_mask, pads_repeat_last_real
from gateloop.models.block import Block
from gateloop.models.registry import build_model

# generate's options that only apply when sampling (do_sample=True)
SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "min_p", "typical_p")


class CheckpointingBlock(Block, GradientCheckpointingLayer):
    """Our ``Block`` as a transformers ``GradientCheckpointingLayer`` (as ``MambaBlock`` is): the HF
    models re-class their blocks to it, so ``activation_checkpointing_enable`` (every_n_layers,
    offload, its checkpoint kwargs) drives them the way it drives transformers' own layers. No new
    parameters or state: names, ``state_dict`` and checkpoints are unchanged; with checkpointing off
    (the default) the forward is ``Block.forward``. The input ``x`` is positional and the state
    keywords (``state``, ``return_state``) are bound by the layer, so a block that returns its state
    recomputes it in the backward without side effects (a GateLoop state is returned, not updated)."""


class _Adapter(PreTrainedModel):
    """What the base model and the causal LM share: ``self.model`` is our model (the model
    registry's class for the config's native form, head included); weights are ``model.<our
    names>`` in both, so either class loads the other's directory without a missing tensor."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True  # per block: each block is a CheckpointingBlock
    _is_stateful = True  # a recurrent state cannot be rolled back (no assisted decoding)
    _no_split_modules: ClassVar[list[str]] = ["CheckpointingBlock"]

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.model = build_model(config.to_native())
        for block in self.model.blocks:
            if type(block) is not Block:
                raise TypeError(f"expected gateloop.models.Block blocks, got {type(block).__name__}")
            block.__class__ = CheckpointingBlock  # same module, transformers' checkpointing hooks
        if torch.get_default_device().type != "meta":
            # built on a real device, our constructors initialised every weight: transformers'
            # init pass (post_init) must not draw them again. On the meta device (from_pretrained)
            # nothing is marked, and the weights a checkpoint lacks reach _init_weights.
            for module in self.model.modules():
                module._is_hf_initialized = True
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.from_pretrained``; a local directory must hold this class's model_type
        (transformers only warns, then loads whatever matches)."""
        directory = Path(str(pretrained_model_name_or_path))
        if (directory / "config.json").is_file():
            saved = read_json_object(directory / "config.json", "a Hugging Face model config")
            if saved.get("model_type") != cls.config_class.model_type:
                raise ValueError(
                    f"{directory / 'config.json'} has model_type {saved.get('model_type')!r}: not a "
                    f"{cls.__name__} directory (expected model_type {cls.config_class.model_type!r})"
                )
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        """The weights a checkpoint lacks get our own initialisation (``initialize_missing``)."""
        initialize_missing(self.model, module)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the forward makes its own GateLoopCache

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed = value

    def resize_token_embeddings(self, *args: Any, **kwargs: Any) -> nn.Embedding:
        """``PreTrainedModel.resize_token_embeddings`` (embedding, and the head when untied), then
        our model's own config gets the new vocabulary size, so the new ids are accepted."""
        embeddings = super().resize_token_embeddings(*args, **kwargs)
        native = self.model.config
        size = embeddings.num_embeddings
        output = None if native.output_vocab_size is None else size
        self.model.config = dataclasses.replace(native, vocab_size=size, output_vocab_size=output)
        return embeddings

    def _run(
        self,
        input_ids: Tensor | None,
        inputs_embeds: Tensor | None,
        attention_mask: Tensor | None,
        cache: GateLoopCache | None,
        use_cache: bool | None,
        output_hidden_states: bool | None,
        kwargs: dict[str, Any],
    ) -> tuple[Tensor, GateLoopCache | None, tuple[Tensor, ...] | None]:
        """(final hidden states [B, L, d_model], the cache when used, every layer's hidden states
        when asked); consumes from ``kwargs`` everything but the loss keywords, refusing the rest."""
        cache = kwargs.pop("past_key_values", None) if cache is None else cache  # transformers < 5.24
        if kwargs.pop("output_attentions", None):
            raise ValueError(f"{type(self).__name__} has no attention weights to output (output_attentions)")
        tokens = input_ids if input_ids is not None else inputs_embeds
        if tokens is None:
            raise ValueError("pass input_ids [B, L] or inputs_embeds [B, L, d_model]")
        shape = tokens.shape[:2]
        packing = packing_masks(kwargs, shape, tokens.device)
        check_no_unused(kwargs, type(self).__name__)
        if packing and (cache is not None or use_cache):
            raise ValueError(
                "packed documents (cu_seqlens, document_ids or restarting position_ids) cannot continue "
                "from or return a cache: a cache holds one state per row; pass use_cache=False"
            )
        if use_cache is None:
            use_cache = bool(self.config.use_cache) and not self.training and not packing
        if output_hidden_states is None:
            output_hidden_states = bool(self.config.output_hidden_states)
        masks = {**new_token_mask(attention_mask, shape), **packing}
        state = None if cache is None or not cache.states else cache.states
        every: list[Tensor] | None = [] if output_hidden_states else None
        hidden, states = self.model.hidden_states(
            input_ids,
            inputs_embeds=inputs_embeds,
            state=state,
            return_state=use_cache,
            every_layer=every,
            **masks,
        )
        if "attention_mask" in masks:
            hidden = pads_repeat_last_real(hidden, masks["attention_mask"])
        if use_cache:
            cache = cache if cache is not None else GateLoopCache()
            cache.update(states, shape[1])
        return hidden, cache if use_cache else None, None if every is None else tuple(every)


class _CausalLMAdapter(_Adapter, GenerationMixin):
    """The causal LM: ``_Adapter`` plus the head's logits, the loss and generation."""

    def get_output_embeddings(self) -> nn.Linear | None:
        return self.model.head  # None when tied: the forward reuses embed.weight

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.model.head = value

    def prepare_inputs_for_generation(
        self,
        input_ids: Tensor,
        *,
        inputs_embeds: Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        first = is_first_iteration
        inputs = super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, is_first_iteration=first, **kwargs
        )
        if kwargs.get("use_cache", True) and not first:
            inputs["attention_mask"] = None  # a generated token is always real: the fast one-token step
        return inputs

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """``GenerationMixin.generate``, after refusing beam search with sampling-only options."""
        _check_beam_options(kwargs, self.generation_config)
        return super().generate(*args, **kwargs)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        cache: GateLoopCache | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | Tensor = 0,
        inputs_embeds: Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple[Any, ...]:
        """input_ids [B, L] (after ``cache``'s positions) -> logits [B, L or logits_to_keep, V].

        inputs_embeds [B, L, d_model]: in place of input_ids (prompt tuning, probing).
        attention_mask: [B, L] or [B, cached + L], 0/False on padding (any dtype). labels [B, L]:
        shifted inside (HF convention, -100 ignored) into ``loss``. Packed documents: ``cu_seqlens``
        / ``cu_seq_lens_q`` (B = 1), ``document_ids``, or ``position_ids`` restarting at 0 (what
        ``DataCollatorWithFlattening`` sends); the state restarts at each document.
        output_hidden_states: the embeddings, every block's output and the final normed one
        (n_layer + 1 tensors). Any other keyword is a TypeError (never silently ignored).
        """
        loss_kwargs = {k: kwargs.pop(k) for k in LOSS_KEYWORDS if k in kwargs}
        hidden, cache, every = self._run(
            input_ids, inputs_embeds, attention_mask, cache, use_cache, output_hidden_states, kwargs
        )
        logits = self.model.logits(_keep(hidden, logits_to_keep))  # (B, kept, V)
        loss = None
        if labels is not None:
            vocab = self.config.vocab_size
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=vocab, **loss_kwargs)
        output = CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache, hidden_states=every)
        return output if return_dict is not False else output.to_tuple()


class _BaseModelAdapter(_Adapter):
    """The base model (``AutoModel``): the final hidden states, no head."""

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        cache: GateLoopCache | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        inputs_embeds: Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast | tuple[Any, ...]:
        """input_ids [B, L] or inputs_embeds [B, L, d_model] -> last_hidden_state [B, L, d_model]
        (after the final norm: what the head reads); the keywords as the causal LM's forward."""
        hidden, cache, every = self._run(
            input_ids, inputs_embeds, attention_mask, cache, use_cache, output_hidden_states, kwargs
        )
        output = BaseModelOutputWithPast(last_hidden_state=hidden, cache=cache, hidden_states=every)
        return output if return_dict is not False else output.to_tuple()


def _keep(hidden: Tensor, logits_to_keep: int | Tensor) -> Tensor:
    """The positions whose logits are wanted: all (0), the last n (int n), or the given indices."""
    if isinstance(logits_to_keep, Tensor):
        return hidden[:, logits_to_keep]
    return hidden[:, -logits_to_keep:] if logits_to_keep else hidden


def _check_beam_options(kwargs: dict[str, Any], default: Any) -> None:
    """ValueError for beam search (num_beams > 1, do_sample False) given sampling-only options:
    they would be ignored silently."""
    config = kwargs.get("generation_config") or default
    num_beams = kwargs.get("num_beams", getattr(config, "num_beams", 1)) or 1
    do_sample = kwargs.get("do_sample", getattr(config, "do_sample", False))
    if num_beams <= 1 or do_sample:
        return
    given = [f"{name}={kwargs[name]!r}" for name in SAMPLING_OPTIONS if kwargs.get(name) is not None]
    if given:
        raise ValueError(
            f"num_beams={num_beams} without do_sample=True is beam search, which ignores {', '.join(given)}: "
            "drop them, or pass do_sample=True for beam sampling"
        )


class GateLoopForCausalLM(_CausalLMAdapter, GenerationMixin):
    """Hugging Face causal LM over ``gateloop.models.GateLoopLM`` (``model_type = "gateloop"``).

    Example:
        >>> from gateloop.models import GateLoopConfig
        >>> model = GateLoopForCausalLM(GateLoopHFConfig.from_native(GateLoopConfig.tiny())).eval()
        >>> ids = torch.randint(0, 97, (2, 6))
        >>> model(ids, labels=ids).loss.shape
        torch.Size([])
        >>> model.generate(ids, max_new_tokens=4, do_sample=False).shape
        torch.Size([2, 10])
    """

    config_class = GateLoopHFConfig


class GateLoopTransformerForCausalLM(_CausalLMAdapter, GenerationMixin):
    """Hugging Face causal LM over the baseline ``gateloop.models.TransformerLM``."""

    config_class = GateLoopTransformerHFConfig


class GateLoopModel(_BaseModelAdapter):
    """Hugging Face base model (``AutoModel``) over ``GateLoopLM``: final hidden states, no head.

    Example:
        >>> from gateloop.models import GateLoopConfig
        >>> model = GateLoopModel(GateLoopHFConfig.from_native(GateLoopConfig.tiny())).eval()
        >>> model(torch.randint(0, 97, (2, 6))).last_hidden_state.shape
        torch.Size([2, 6, 32])
    """

    config_class = GateLoopHFConfig


class GateLoopTransformerModel(_BaseModelAdapter):
    """Hugging Face base model over the baseline ``TransformerLM``."""

    config_class = GateLoopTransformerHFConfig


# our model_type (the model registry's) -> the HF causal-LM class; its HF config is its config_class
HF_MODELS: dict[str, type[_CausalLMAdapter]] = {
    adapter.config_class.native_class.model_type: adapter
    for adapter in (GateLoopForCausalLM, GateLoopTransformerForCausalLM)
}
# the same, for the base models (``AutoModel``)
HF_BASE_MODELS: dict[str, type[_BaseModelAdapter]] = {
    adapter.config_class.native_class.model_type: adapter
    for adapter in (GateLoopModel, GateLoopTransformerModel)
}
