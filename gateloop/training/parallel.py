"""Data parallelism applied from outside the model: DDP (every rank holds the whole model) or
FSDP2 (``torch.distributed.fsdp.fully_shard``: parameters, gradients and AdamW's moments sharded
across the ranks, each block gathered for its forward and backward).

FSDP2 shards in torchtitan's order: activation checkpointing, then per-block ``torch.compile``,
then ``fully_shard`` on each block and on the root (embedding, final norm, head). Its mixed
precision is bf16 parameters with float32 gradient reduction on CUDA when the run asks for bf16
(``--train.autocast bf16``), float32 otherwise (on the CPU always). Under FSDP every collective
below (gathering a full state dict, loading one) must be called by every rank.

Checkpoints of an FSDP run are sharded by default (``sharded_checkpoint``: each rank writes its
own slices with ``torch.distributed.checkpoint``); with ``checkpoint_format="full"`` they hold
the full model and optimizer state, gathered here into rank 0's host memory and written by it. ``final/``
is always the full model, so evaluation, sampling and HF conversion read it as a DDP run's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from gateloop.layers.gate_loop_layer import TRANSITION_TAG, is_transition_parameter
from gateloop.training.activation_checkpointing import apply_activation_checkpointing
from gateloop.training.distributed import Runtime, wrap_data_parallel


def wrap_for_training(
    model: nn.Module,
    runtime: Runtime,
    *,
    parallel: str = "ddp",
    activation_checkpointing: bool = False,
    compile: bool = False,
    bf16: bool = False,
    cpu_offload: bool = False,
) -> nn.Module:
    """What the training step calls. DDP: ``model`` wrapped (and compiled whole); FSDP: ``model``
    itself, sharded in place (blocks compiled one by one). A single process runs ``model``
    unwrapped either way; under context parallelism (``runtime.cp_size`` > 1) the result is
    wrapped in ``ContextParallel``. Checkpoints save the bare model (recomputation keeps its
    names)."""
    if runtime.cp_size > 1:
        check_context_parallel(model)
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if parallel == "fsdp" and runtime.distributed:
        shard(model, runtime, compile_blocks=compile, bf16=bf16, cpu_offload=cpu_offload)
        forward: nn.Module = model
    else:
        forward = wrap_data_parallel(model, runtime)
        if compile:
            forward = torch.compile(forward)  # type: ignore[assignment]
    return ContextParallel(forward, runtime.cp_group) if runtime.cp_size > 1 else forward


class ContextParallel(nn.Module):
    """The training forward under context parallelism: ``module`` called with
    ``context_parallel=group``, which every GateLoop layer hands to the context-parallel op (the
    rest of a model is position-wise). Holds no parameters of its own; checkpoints save the bare
    model."""

    def __init__(self, module: nn.Module, group: Any) -> None:
        super().__init__()
        self.module = module
        self.group = group

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, context_parallel=self.group, **kwargs)


def check_context_parallel(model: nn.Module) -> None:
    """ValueError unless every time-mixing layer of ``model`` can split a sequence (GateLoop's
    state passes exactly; softmax attention would need ring attention, which is not here)."""
    from gateloop.layers import CausalSelfAttention

    if any(isinstance(m, CausalSelfAttention) for m in model.modules()):
        raise ValueError(
            "--train.context-parallel needs GateLoop layers: the Transformer's softmax attention "
            "cannot split a sequence by state passing"
        )


def shard(model: nn.Module, runtime: Runtime, *, compile_blocks: bool, bf16: bool, cpu_offload: bool) -> None:
    """``fully_shard`` each of ``model.blocks``, then the root, over all ranks (in place)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    # the transition tag is an attribute of the Parameter object, and sharding makes new ones
    tagged = {name for name, p in model.named_parameters() if is_transition_parameter(p)}
    on_cuda = runtime.device.type == "cuda"
    mixed = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16 and on_cuda
        else MixedPrecisionPolicy()  # why float32 on the CPU: gloo reduces bf16 no faster, and less exactly
    )
    options: dict[str, Any] = {
        "mesh": init_device_mesh(runtime.device.type, (runtime.world_size,)),
        "mp_policy": mixed,
        "offload_policy": CPUOffloadPolicy() if cpu_offload else OffloadPolicy(),
    }
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"FSDP shards a model by its blocks; {type(model).__name__} has no .blocks list")
    for block in blocks:
        if compile_blocks:
            block.compile()
        fully_shard(block, **options)
    fully_shard(model, **options)
    for name, p in model.named_parameters():
        if name in tagged:
            setattr(p, TRANSITION_TAG, True)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model``'s parameters are FSDP shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


@contextlib.contextmanager
def gradient_sync(module: nn.Module, runtime: Runtime, sync: bool) -> Iterator[None]:
    """Inside: the backward reduces gradients across ranks only if ``sync`` (the last micro-batch
    of a step); a micro-batch before it accumulates locally (DDP ``no_sync``, FSDP
    ``set_requires_gradient_sync``)."""
    if sync or not runtime.distributed:
        yield
        return
    if isinstance(module, ContextParallel):
        module = module.module
    if isinstance(module, nn.parallel.DistributedDataParallel):
        with module.no_sync():
            yield
        return
    module.set_requires_gradient_sync(False)  # type: ignore[operator]
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)  # type: ignore[operator]


def local_value(t: Tensor) -> Tensor:
    """A replicated DTensor (an FSDP run's gradient norm) as a plain tensor; others as they are."""
    full = getattr(t, "full_tensor", None)
    return full() if callable(full) else t


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's unsharded weights (a collective under FSDP: every rank calls it), gathered
    into rank 0's host memory only (the other ranks get ``{}``: no rank but the writer ever holds
    the whole model); the plain state dict otherwise."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model: nn.Module, weights: dict[str, Tensor]) -> None:
    """Load unsharded ``weights`` (every rank holds them) into ``model``, sharded or not."""
    if not is_sharded(model):
        model.load_state_dict(weights)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state to checkpoint: unsharded and keyed by parameter name under FSDP (a
    collective; rank 0 gets it in host memory, the others ``{}``), ``optimizer.state_dict()``
    otherwise."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """The inverse of ``optimizer_state`` (every rank holds ``state``)."""
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
