"""One rank of the context-parallel check (run by tests/test_context_parallel.py under torchrun):
every rank builds the whole sequence from one seed, runs ``gate_loop`` on all of it (the single
process) and ``gate_loop_context_parallel`` on its slice, and compares outputs, final states and
every gradient in float64; exit status 1 with the worst difference on any mismatch."""

from __future__ import annotations

import argparse
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from gateloop.layers import GateLoop
from gateloop.ops import gate_loop
from gateloop.ops.context_parallel import gate_loop_context_parallel

TOLERANCE = 1e-12  # float64: the slices' sums differ from the whole sequence's in the last digits


def inputs(total: int, per_head: bool, real: bool, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    B, H, dk, dv = 2, 2, 3, 4
    d = 1 if per_head else dk
    q, k = (torch.randn(B, total, H, dk, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, total, H, dv, generator=g, dtype=torch.float64)
    # gates from vanishing to saturated: logsigmoid of pre-activations in [-12, 12]
    log_mag = F.logsigmoid(24 * torch.rand(B, total, H, d, generator=g, dtype=torch.float64) - 12)
    log_mag[0, total // 2, 0] = -torch.inf  # a = 0 exactly: a hard reset inside some slice
    phase = (
        torch.zeros_like(log_mag)
        if real
        else 0.5 * torch.randn(B, total, H, d, generator=g, dtype=torch.float64)
    )
    log_a = log_mag if real else torch.complex(log_mag, phase)
    state = torch.complex(*(torch.randn(B, H, dk, dv, generator=g, dtype=torch.float64) for _ in range(2)))
    weights = torch.randn(B, total, H, dv, generator=g, dtype=torch.float64)  # dL/dy
    final_weights = torch.complex(
        *(torch.randn(B, H, dk, dv, generator=g, dtype=torch.float64) for _ in range(2))
    )
    return {"q": q, "k": k, "v": v, "log_a": log_a, "state": state, "w": weights, "wf": final_weights}


def loss(y: torch.Tensor, final: torch.Tensor, w: torch.Tensor, wf: torch.Tensor, last: bool) -> torch.Tensor:
    """Σ w·y (+ Re Σ conj(wf)·final on the rank that ends the sequence)."""
    out = (y * w).sum()
    return out + (final * wf.conj()).real.sum() if last else out


def check(mode: str, lengths: list[int], per_head: bool, real: bool, with_state: bool) -> float:
    rank, world = dist.get_rank(), dist.get_world_size()
    total = sum(lengths)
    data = inputs(total, per_head, real, seed=1234)
    names = ("q", "k", "v", "log_a")
    full = {n: data[n].clone().requires_grad_() for n in names}
    state = data["state"].clone().requires_grad_() if with_state else None
    chunk = {"chunk_size": 4} if mode == "chunk" else {}  # chunks of 4: slices end inside chunks
    y, final = gate_loop(**full, mode=mode, **chunk, initial_state=state, output_final_state=True)
    loss(y, final, data["w"], data["wf"], True).backward()

    begin = sum(lengths[:rank])
    end = begin + lengths[rank]
    part = {n: data[n][:, begin:end].clone().requires_grad_() for n in names}
    cp_state = data["state"].clone().requires_grad_() if with_state else None
    y_cp, final_cp = gate_loop_context_parallel(
        **part, mode=mode, **chunk, initial_state=cp_state, output_final_state=True
    )
    loss(y_cp, final_cp, data["w"][:, begin:end], data["wf"], rank == world - 1).backward()

    worst = (y_cp - y[:, begin:end]).abs().max().item()
    if rank == world - 1:
        worst = max(worst, (final_cp - final).abs().max().item())
    for n in names:
        worst = max(worst, (part[n].grad - full[n].grad[:, begin:end]).abs().max().item())
    if with_state:
        shared = cp_state.grad.clone()  # each rank's share of the initial state's gradient
        dist.all_reduce(shared)
        worst = max(worst, (shared - state.grad).abs().max().item())
    everywhere = torch.tensor([worst], dtype=torch.float64)
    dist.all_reduce(everywhere, op=dist.ReduceOp.MAX)  # the worst over every rank's slice
    return float(everywhere)


def layer_worst(mode: str, lengths: list[int]) -> float:
    """The GateLoop layer with ``context_parallel``: its slice of y and of dL/dx, and the sum
    over ranks of its parameters' gradients, against the layer on the whole sequence."""
    rank = dist.get_rank()
    torch.manual_seed(5)
    layer = GateLoop(8, n_head=2, mode=mode, chunk_size=4 if mode == "chunk" else None, dtype=torch.float64)
    x = torch.randn(2, sum(lengths), 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    w = torch.randn(2, sum(lengths), 8, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    full_x = x.clone().requires_grad_()
    (layer(full_x) * w).sum().backward()
    full_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    begin = sum(lengths[:rank])
    end = begin + lengths[rank]
    part = x[:, begin:end].clone().requires_grad_()
    y = layer(part, context_parallel=dist.group.WORLD)
    (y * w[:, begin:end]).sum().backward()
    worst = (part.grad - full_x.grad[:, begin:end]).abs().max().item()
    with torch.no_grad():
        worst = max(worst, (y - layer(full_x)[:, begin:end]).abs().max().item())
    for p, want in zip(layer.parameters(), full_grads, strict=True):
        shared = p.grad.clone()
        dist.all_reduce(shared)  # each rank's share of a parameter's gradient, as DDP sums them
        worst = max(worst, (shared - want).abs().max().item())
    everywhere = torch.tensor([worst], dtype=torch.float64)
    dist.all_reduce(everywhere, op=dist.ReduceOp.MAX)
    return float(everywhere)


def documents_worst(mode: str, lengths: list[int], packed: bool) -> float:
    """The layer with documents across slices: ``document_ids`` (the whole sequence's ids,
    sliced; documents starting exactly at a slice boundary and inside a slice) or, packed (B = 1),
    the whole sequence's ``cu_seqlens``; y, dL/dx and the summed parameter gradients against
    the layer on the whole sequence with the same documents."""
    rank, total = dist.get_rank(), sum(lengths)
    bounds = sorted({sum(lengths[:1]), total // 2, total - 1} - {0, total})  # a slice start, inside, the end
    torch.manual_seed(5)
    layer = GateLoop(8, n_head=2, mode=mode, chunk_size=4 if mode == "chunk" else None, dtype=torch.float64)
    B = 1 if packed else 2
    x = torch.randn(B, total, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    w = torch.randn(B, total, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    ids = torch.bucketize(torch.arange(total), torch.tensor(bounds), right=True).expand(B, total)
    cu = torch.tensor([0, *bounds, total])
    begin = sum(lengths[:rank])
    end = begin + lengths[rank]
    whole = {"cu_seqlens": cu} if packed else {"document_ids": ids}
    mine = {"cu_seqlens": cu} if packed else {"document_ids": ids[:, begin:end]}
    full_x = x.clone().requires_grad_()
    (layer(full_x, **whole) * w).sum().backward()
    full_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    part = x[:, begin:end].clone().requires_grad_()
    y = layer(part, context_parallel=dist.group.WORLD, **mine)
    (y * w[:, begin:end]).sum().backward()
    worst = (part.grad - full_x.grad[:, begin:end]).abs().max().item()
    with torch.no_grad():
        worst = max(worst, (y - layer(full_x, **whole)[:, begin:end]).abs().max().item())
    for p, want in zip(layer.parameters(), full_grads, strict=True):
        shared = p.grad.clone()
        dist.all_reduce(shared)
        worst = max(worst, (shared - want).abs().max().item())
    everywhere = torch.tensor([worst], dtype=torch.float64)
    dist.all_reduce(everywhere, op=dist.ReduceOp.MAX)
    return float(everywhere)


def nonfinite_stays_in_later_slices(mode: str, lengths: list[int]) -> bool:
    """A NaN key on the last rank leaves every earlier rank's output (and state) finite."""
    rank, world = dist.get_rank(), dist.get_world_size()
    data = inputs(sum(lengths), per_head=False, real=False, seed=7)
    begin = sum(lengths[:rank])
    part = {n: data[n][:, begin : begin + lengths[rank]].clone() for n in ("q", "k", "v", "log_a")}
    if rank == world - 1:
        part["k"][0, 0, 0, 0] = torch.nan
    chunk = {"chunk_size": 4} if mode == "chunk" else {}
    y, final = gate_loop_context_parallel(**part, mode=mode, **chunk, output_final_state=True)
    assert final is not None
    finite = torch.tensor([rank == world - 1 or bool(y.isfinite().all() and final.isfinite().all())])
    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", required=True, help="positions per rank, comma-separated")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    lengths = [int(n) for n in args.lengths.split(",")]
    assert len(lengths) == dist.get_world_size(), "one length per rank"
    failures = []
    for mode in ("chunk", "recurrent", "scan"):
        for per_head, real, with_state in ((False, False, True), (True, False, False), (False, True, False)):
            worst = check(mode, lengths, per_head, real, with_state)
            label = f"{mode} per_head={per_head} real={real} state={with_state}"
            if not worst <= TOLERANCE:
                failures.append(f"{label}: worst difference {worst:.3g} > {TOLERANCE}")
            elif dist.get_rank() == 0:
                print(f"{label}: worst difference {worst:.3g}")
        worst = layer_worst(mode, lengths)
        if not worst <= TOLERANCE:
            failures.append(f"{mode} layer: worst difference {worst:.3g} > {TOLERANCE}")
        elif dist.get_rank() == 0:
            print(f"{mode} layer: worst difference {worst:.3g}")
        for packed in (False, True):
            worst = documents_worst(mode, lengths, packed)
            label = f"{mode} layer with {'cu_seqlens' if packed else 'document_ids'}"
            if not worst <= TOLERANCE:
                failures.append(f"{label}: worst difference {worst:.3g} > {TOLERANCE}")
            elif dist.get_rank() == 0:
                print(f"{label}: worst difference {worst:.3g}")
        if not nonfinite_stays_in_later_slices(mode, lengths):
            failures.append(f"{mode}: a NaN on the last rank reached an earlier rank's output")
    dist.destroy_process_group()
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
