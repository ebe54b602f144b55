"""Memory per rank of GateLoop LMs under DDP, FSDP and FSDP + context parallelism, computed from
the code: parameter counts from the models built on the meta device, activation bytes from the
tensors one block saves for its backward (measured with ``saved_tensors_hooks`` on a short real
sequence and scaled linearly in tokens, which they are: every saved tensor is [B, L, ...] or a
chunk-sized block of it), and the bytes each layout communicates per step.

Both paths are measured: ``cuda``, what a GPU run executes (the SISO heads on our Triton scan;
run here under Triton's CPU interpreter, with the dispatcher told the tensors are a GPU's), and
``cpu`` (the compiled CPU SISO kernel). Both save the op's inputs only, so their rows agree (24
d_model-sized float32 rows per token and block for the paper's layer: projections, gates,
norms, the FFN). Parameters a layer saves for its backward (a linear layer's weight) are not
counted: they are in the 16 bytes per parameter already. With activation checkpointing
(``--train.activation-checkpointing``) a block keeps only its input and one block's tensors
are alive at a time in the backward.

    python benchmarks/scaling_plan.py    # prints the tables, writes benchmarks/results/scaling_plan.json

Used by docs/scaling.md. float32 training with AdamW: 4 bytes of weights, 4 of gradients and 8 of
moments per parameter (16 in all); activations in float32.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton: the cuda path's kernels

import torch

from gateloop.models import GateLoopConfig, GateLoopLM

# (name, config): the paper's 125M model, and 1.3B / 7B shapes scaled the way GLA's are (width,
# depth, FFN 3x), SISO heads as the paper's
SIZES = {
    "125M": GateLoopConfig.wikitext103_125m(),
    "1.3B": GateLoopConfig.wikitext103_125m(
        d_model=2048, n_layer=24, d_channel_mixing=6144, d_qk=2048, d_v=2048, n_head=2048
    ),
    "7B": GateLoopConfig.wikitext103_125m(
        d_model=4096, n_layer=32, d_channel_mixing=12288, d_qk=4096, d_v=4096, n_head=4096
    ),
}
LENGTHS = (2048, 8192, 32768)
BYTES_PER_PARAMETER = 16  # float32 weights + gradients + AdamW's two moments
GIB = 2**30


def parameters(config: GateLoopConfig) -> int:
    with torch.device("meta"):
        return GateLoopLM(config).num_parameters()


def saved_bytes_per_token(config: GateLoopConfig, path: str, tokens: int = 64) -> float:
    """Bytes one block saves for its backward, per token, measured on ``tokens`` real tokens;
    ``path`` "cuda" (our Triton kernels, interpreted) or "cpu" (the torch chunked forms)."""
    small = GateLoopConfig.from_dict({**config.to_dict(), "n_layer": 1, "vocab_size": 8})
    torch.manual_seed(0)
    block = GateLoopLM(small).blocks[0]
    x = torch.randn(1, tokens, config.d_model, requires_grad=True)
    with _gpu_dispatch(path == "cuda"), _saved_bytes(block) as saved:
        block(x).sum().backward()
    return saved[0] / tokens


@contextlib.contextmanager
def _saved_bytes(module: torch.nn.Module) -> Iterator[list[int]]:
    """[bytes autograd saves for the backward inside the block], parameters excluded: a linear
    layer saves its weight (or a view of it), counted in the model's state already."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in weights:
            saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield saved


def head_bytes_per_token(config: GateLoopConfig, tokens: int = 16) -> float:
    """Bytes per token the LM head and its cross-entropy hold in the backward: what they save
    (the final norm's input, the log-softmax) plus the logits' gradient, [L, V] float32, which
    exists while the head's backward runs."""
    small = GateLoopConfig.from_dict({**config.to_dict(), "n_layer": 1})
    with torch.device("meta"):
        model = GateLoopLM(small)
    model = model.to_empty(device="cpu")
    hidden = torch.randn(1, tokens, config.d_model, requires_grad=True)
    targets = torch.zeros(1, tokens, dtype=torch.long)
    with _saved_bytes(model) as saved:
        logits = model.logits(model.final_norm(hidden))  # (1, tokens, V)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    return saved[0] / tokens + 4 * config.vocab_size


def gathered_block_bytes(config: GateLoopConfig) -> int:
    """FSDP's unsharded parameters alive at once: the block running and the one prefetched
    (float32; bf16 parameters under mixed precision halve it)."""
    small = GateLoopConfig.from_dict({**config.to_dict(), "n_layer": 1})
    with torch.device("meta"):
        block = GateLoopLM(small).blocks[0]
    return 2 * 4 * sum(p.numel() for p in block.parameters())


@contextlib.contextmanager
def _gpu_dispatch(on: bool) -> Iterator[None]:
    """The op's dispatcher choosing the Triton backend for CPU tensors, as it does for CUDA ones."""
    if not on:
        yield
        return
    import importlib

    # the module, not the function ``gateloop.ops`` exports under the same name
    dispatcher = importlib.import_module("gateloop.ops.gate_loop")

    original = dispatcher.use_triton
    dispatcher.use_triton = lambda backend, mode, inputs, chunk_size: mode in ("chunk", "recurrent")
    try:
        yield
    finally:
        dispatcher.use_triton = original


def cp_numbers(config: GateLoopConfig) -> int:
    """Complex numbers one slice contributes per layer: its final state [H, dk, dv] and decay [H, d]."""
    head_qk, head_v = (
        (config.d_qk or config.d_model) // config.n_head,
        (config.d_v or config.d_model) // config.n_head,
    )
    d = 1 if config.per_head_transition else head_qk
    return config.n_head * (head_qk * head_v + d)


def plan(ranks: int, cp: int, path: str) -> list[dict[str, object]]:
    rows = []
    for name, config in SIZES.items():
        n = parameters(config)
        block = saved_bytes_per_token(config, path)  # one block's saved bytes per token
        head = head_bytes_per_token(config)
        per_token = block * config.n_layer + head
        # activation checkpointing: each block keeps its input (float32 [L, d_model]); one
        # block's saved tensors are alive while it recomputes in the backward
        checkpointed = 4 * config.d_model * config.n_layer + block + head
        state = n * BYTES_PER_PARAMETER
        sharded = state / ranks + gathered_block_bytes(config)
        # DDP's all-reduce moves ~2x the gradients per step; FSDP's all-gathers (forward and
        # backward) and reduce-scatter ~3x the float32 weights (ring algorithms, per rank)
        for length in LENGTHS:
            rows.append(
                {
                    "model": name,
                    "path": path,
                    "parameters": n,
                    "seq_len": length,
                    "activation_bytes_per_token": per_token,
                    "head_bytes_per_token": head,
                    "ddp_gib": (state + per_token * length) / GIB,
                    "fsdp_gib": (sharded + per_token * length) / GIB,
                    "fsdp_cp_gib": (sharded + per_token * length / cp) / GIB,
                    "fsdp_ac_gib": (sharded + checkpointed * length) / GIB,
                    "fsdp_cp_ac_gib": (sharded + checkpointed * length / cp) / GIB,
                    "ddp_comm_gib": 2 * 4 * n / GIB,
                    "fsdp_comm_gib": 3 * 4 * n / GIB,
                    # per step, batch 1: each layer all-gathers every slice's (state, decay), n
                    # complex64 numbers a slice, receiving (cp - 1) n, and all-reduces the (cp, n)
                    # gradients in the backward (a ring: ~2 cp n per rank); 8 bytes a number
                    "cp_comm_mib": config.n_layer * (3 * cp - 1) * cp_numbers(config) * 8 / 2**20,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=8, help="ranks FSDP shards over (default 8)")
    parser.add_argument("--cp", type=int, default=8, help="context-parallel ranks per sequence (default 8)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scaling_plan.json")
    args = parser.parse_args()
    rows = [row for path in ("cuda", "cpu") for row in plan(args.ranks, args.cp, path)]
    for path in ("cuda", "cpu"):
        mine = [{k: v for k, v in r.items() if k != "path"} for r in rows if r["path"] == path]
        if path == "cpu" and mine == [{k: v for k, v in r.items() if k != "path"} for r in rows[: len(mine)]]:
            print("\ncpu path: the same numbers (both save the op's inputs only)")
            continue
        print(
            f"\n{path} path: memory per rank (GiB) at batch 1 per rank; "
            f"FSDP over {args.ranks} ranks; CP {args.cp}"
        )
        print("| model | parameters | L | DDP | FSDP | FSDP + CP | FSDP + AC | FSDP + CP + AC |")
        print("|---|---|---|---|---|---|---|---|")
        for r in (r for r in rows if r["path"] == path):
            print(
                f"| {r['model']} | {r['parameters'] / 1e6:.0f}M | {r['seq_len']} | {r['ddp_gib']:.1f} | "
                f"{r['fsdp_gib']:.1f} | {r['fsdp_cp_gib']:.1f} | {r['fsdp_ac_gib']:.1f} | "
                f"{r['fsdp_cp_ac_gib']:.1f} |"
            )
    print("\ncommunication per step and rank")
    print("| model | DDP | FSDP | CP (all layers) |")
    print("|---|---|---|---|")
    for r in rows:
        if r["path"] == "cuda" and r["seq_len"] == LENGTHS[0]:
            print(
                f"| {r['model']} | {r['ddp_comm_gib']:.1f} GiB | {r['fsdp_comm_gib']:.1f} GiB | "
                f"{r['cp_comm_mib']:.2f} MiB |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"ranks": args.ranks, "cp": args.cp, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
