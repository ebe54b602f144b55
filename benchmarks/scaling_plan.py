"""Memory per rank of GateLoop LMs under DDP, FSDP and FSDP + context parallelism, computed from
the code: parameter counts from the models built on the meta device, activation bytes from the
tensors one block saves for its backward (measured with ``saved_tensors_hooks`` on a short real
sequence and scaled linearly in tokens, which they are: every saved tensor is [B, L, ...] or a
chunk-sized block of it), and the bytes each layout communicates per step.

    python benchmarks/scaling_plan.py    # prints the table, writes benchmarks/results/scaling_plan.json

Used by docs/scaling.md. float32 training with AdamW: 4 bytes of weights, 4 of gradients and 8 of
moments per parameter (16 in all); activations in float32, no activation checkpointing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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


def saved_bytes_per_token(config: GateLoopConfig, tokens: int = 128) -> float:
    """Bytes one block saves for its backward, per token, measured on ``tokens`` real tokens."""
    small = GateLoopConfig.from_dict({**config.to_dict(), "n_layer": 1, "vocab_size": 8})
    block = GateLoopLM(small).blocks[0]
    x = torch.randn(1, tokens, config.d_model, requires_grad=True)
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x).sum().backward()
    return saved / tokens


def cp_numbers(config: GateLoopConfig) -> int:
    """Complex numbers one slice contributes per layer: its final state [H, dk, dv] and decay [H, d]."""
    head_qk, head_v = (
        (config.d_qk or config.d_model) // config.n_head,
        (config.d_v or config.d_model) // config.n_head,
    )
    d = 1 if config.per_head_transition else head_qk
    return config.n_head * (head_qk * head_v + d)


def plan(ranks: int, cp: int) -> list[dict[str, object]]:
    rows = []
    for name, config in SIZES.items():
        n = parameters(config)
        per_token = saved_bytes_per_token(config) * config.n_layer
        state = n * BYTES_PER_PARAMETER
        # DDP's all-reduce moves ~2x the gradients per step; FSDP's all-gathers (forward and
        # backward) and reduce-scatter ~3x the float32 weights (ring algorithms, per rank)
        for length in LENGTHS:
            rows.append(
                {
                    "model": name,
                    "parameters": n,
                    "seq_len": length,
                    "ddp_gib": (state + per_token * length) / GIB,
                    "fsdp_gib": (state / ranks + per_token * length) / GIB,
                    "fsdp_cp_gib": (state / ranks + per_token * length / cp) / GIB,
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
    rows = plan(args.ranks, args.cp)
    print(f"memory per rank (GiB) at batch 1 per rank; FSDP over {args.ranks} ranks; CP {args.cp}")
    print(
        "| model | parameters | L | DDP | FSDP | FSDP + CP | DDP comm/step | FSDP comm/step | CP comm/step |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['parameters'] / 1e6:.0f}M | {r['seq_len']} | {r['ddp_gib']:.1f} | "
            f"{r['fsdp_gib']:.1f} | {r['fsdp_cp_gib']:.1f} | {r['ddp_comm_gib']:.1f} GiB | "
            f"{r['fsdp_comm_gib']:.1f} GiB | {r['cp_comm_mib']:.2f} MiB |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"ranks": args.ranks, "cp": args.cp, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
