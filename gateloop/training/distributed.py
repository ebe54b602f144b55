"""Where a run executes: device choice, CPU threads, the process group, DDP and rank-0 helpers.

Every task (Memory Horizon, language modelling) starts through ``setup_run``: one process, or one
rank of ``torchrun --nproc_per_node N -m gateloop ...`` (``WORLD_SIZE > 1``: NCCL on GPUs, gloo on
the CPU). Models are written for one device; data parallelism is applied from outside
(``wrap_data_parallel``), and checkpoints always save the bare model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gateloop._validation import check_positive_int


@dataclass(frozen=True)
class Runtime:
    """This process's place in a run. With context parallelism (``cp_size`` > 1) the ranks form
    groups of ``cp_size`` consecutive ranks that share their batch rows and split each sequence
    (``sequence_slice``); data parallelism runs over the groups (``dp_rank`` of ``dp_size``)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    cp_size: int = 1
    cp_group: Any = None  # this rank's context-parallel process group (None: no context parallelism)

    @property
    def dp_rank(self) -> int:
        """Which rows of a global batch this rank draws (its context-parallel group's index)."""
        return self.rank // self.cp_size

    @property
    def dp_size(self) -> int:
        """How many row-disjoint parts a global batch is split into."""
        return self.world_size // self.cp_size

    @property
    def cp_rank(self) -> int:
        """Which slice of each sequence this rank holds."""
        return self.rank % self.cp_size

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates, checkpoints and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def flush_denormal_enabled() -> bool:
    """Whether subnormals are flushed now. PyTorch has a setter only, so probe it: a subnormal
    times one is zero exactly when denormals-are-zero is on."""
    subnormal = torch.tensor([1e-40], dtype=torch.float32)  # below float32's 1.18e-38 normal range
    return bool((subnormal * 1.0)[0] == 0)


@contextlib.contextmanager
def flush_denormal() -> Iterator[None]:
    """Subnormals flushed to zero inside the block (see ``configure_cpu``), the previous setting
    restored after: the trainer's scope, so that a library user's process keeps its own."""
    before = flush_denormal_enabled()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def configure_cpu(threads: int | None = None) -> None:
    """Process-wide CPU settings of a ``gateloop`` command (the CLI applies them once).

    Flush-to-zero for subnormals: long products of decays |a| < 1 drift into subnormal floats,
    whose arithmetic is ~100x slower on x86 CPUs (docs/numerics.md, "Subnormals"); values that
    small are far below float32 resolution relative to the state, so flushing them changes nothing
    a model can see. ``threads``: intra-op threads (None keeps PyTorch's default, one per core).
    """
    torch.set_flush_denormal(True)
    if threads is not None:
        torch.set_num_threads(check_positive_int("threads", threads))


def current_runtime(device: torch.device | str | None = None) -> Runtime:
    """The runtime of an already initialised process group (or of a single process)."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return Runtime(choose_device(device, local_rank, world), rank, world, local_rank)


def choose_device(
    requested: torch.device | str | None, local_rank: int = 0, world_size: int = 1
) -> torch.device:
    """``requested``, else CUDA when available; under torchrun each rank takes its local GPU."""
    name = str(requested) if requested is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and world_size > 1:
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but torch.cuda.is_available() is False")
    return device


@contextlib.contextmanager
def setup_run(device: torch.device | str | None = None, threads: int | None = None) -> Iterator[Runtime]:
    """Configure the CPU, pick the device, and join the process group when launched by torchrun
    (left again on exit)."""
    configure_cpu(threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = choose_device(device, local_rank, world)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    joined = world > 1 and not torch.distributed.is_initialized()
    if joined:
        torch.distributed.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    try:
        yield current_runtime(chosen)
    finally:
        if joined:
            torch.distributed.destroy_process_group()


def wrap_data_parallel(model: nn.Module, runtime: Runtime) -> nn.Module:
    """DDP around the model when there are several processes, the model itself otherwise."""
    if not runtime.distributed:
        return model
    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def with_context_parallel(runtime: Runtime, size: int) -> Runtime:
    """``runtime`` with context-parallel groups of ``size`` consecutive ranks (every rank must call
    it: it creates the process groups, one per group, kept apart from the one DDP/FSDP reduce
    over so that their collectives never interleave). ``size`` 1: ``runtime`` itself."""
    check_positive_int("context_parallel", size)
    if size == 1:
        return runtime
    if runtime.world_size % size:
        raise ValueError(
            f"--train.context-parallel {size} must divide the number of processes, got "
            f"{runtime.world_size} (launch with torchrun --nproc_per_node a multiple of {size})"
        )
    groups = [
        torch.distributed.new_group(list(range(first, first + size)))
        for first in range(0, runtime.world_size, size)
    ]
    return dataclasses.replace(runtime, cp_size=size, cp_group=groups[runtime.rank // size])


def sequence_slice(length: int, runtime: Runtime) -> slice:
    """The positions of a length-``length`` sequence this rank holds under context parallelism
    (all of them without); equal slices, so that every rank's mean loss weighs alike."""
    if length % runtime.cp_size:
        raise ValueError(
            f"the sequence length {length} is not divisible by --train.context-parallel {runtime.cp_size}"
        )
    per = length // runtime.cp_size
    return slice(runtime.cp_rank * per, (runtime.cp_rank + 1) * per)


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        torch.distributed.barrier()


def mean_over_ranks(value: float, runtime: Runtime) -> float:
    """The mean of a per-rank float over all ranks (itself in a single process)."""
    if not runtime.distributed:
        return value
    backend_device = runtime.device if runtime.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([value], dtype=torch.float64, device=backend_device)
    torch.distributed.all_reduce(t)
    return float(t) / runtime.world_size
