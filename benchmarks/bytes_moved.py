"""Bytes moved by each GPU path of ``gate_loop``, counted from the code, and the memory floor.

Runs each path once (forward, and forward + backward) on the CPU with the Triton kernels under the
interpreter, and counts the memory traffic the same calls would make on a GPU:

  * every PyTorch op: the bytes of its tensor inputs read and of its outputs written (views,
    ``empty`` and scalar reads move nothing; in-place ops count what they read and write);
  * every Triton kernel launch: the bytes of each tensor argument once (the compulsory traffic:
    our scan's shifted re-reads of a tile hit L1/L2; for fla's chunk kernels, which re-read some
    operands, it is a lower bound).

Bytes are counted per element of the [B, L, H] grid at a small shape and scaled to the full
shape (every term is linear in B·L·H, up to the per-chunk states, ~1/64 of a row); the floor is
those bytes over the HBM bandwidth of an H100 (3.35 TB/s) and an H200 (4.8 TB/s): no kernel on
that path can be faster. Paths:

  triton   gate_loop(backend="triton"): our SISO scan for dk = 1, fla's kernels for dk > 1
  triton-split  the same with our scan split over chunks (what a GPU takes for small B·H)
  fla      gate_loop(backend="fla"): GateLoop reduced to fla's kernels (doubled keys, HGRN)
  torch    gate_loop(backend="torch") as it runs on CUDA (the pure-PyTorch chunk form)

    python benchmarks/bytes_moved.py            # writes results/bytes_moved.json (~2 min on a CPU)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from common import comma_choices, environment, header, make_op_inputs, write_results

BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}  # bytes/s, HBM3 / HBM3e
# (counted at, scaled to): counted at small B, L, H with the real head dims
CASES: dict[str, dict[str, Any]] = {
    "S2": {"count": {"B": 1, "L": 512, "H": 64, "dk": 1, "dv": 1}, "full": {"B": 4, "L": 2048, "H": 624}},
    "S2-states": {
        "count": {"B": 1, "L": 512, "H": 64, "dk": 1, "dv": 1},
        "full": {"B": 4, "L": 2048, "H": 624},
        "states": True,
    },
    "M1": {"count": {"B": 1, "L": 256, "H": 1, "dk": 64, "dv": 64}, "full": {"B": 4, "L": 2048, "H": 8}},
}
PATHS = ("triton", "triton-split", "fla", "torch")
_NO_TRAFFIC = {
    "empty",
    "empty_like",
    "new_empty",
    "empty_strided",
    "new_empty_strided",
    "_local_scalar_dense",
}


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


class ByteCounter(TorchDispatchMode):
    """Counts the bytes PyTorch ops read and write, and Triton launches touch (see the docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.torch_bytes = 0
        self.kernel_bytes = 0
        self.paused = False
        self.by_op: dict[str, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if self.paused or func._schema.name.split("::")[-1] in _NO_TRAFFIC:
            return out
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)]
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor)]
        storages = {t.untyped_storage().data_ptr() for t in ins}
        aliases = all(t.untyped_storage().data_ptr() in storages for t in outs)
        if outs and aliases and not func._schema.is_mutable:
            return out  # a view: no data moves
        moved = sum(map(_nbytes, ins)) + sum(map(_nbytes, outs))
        self.torch_bytes += moved
        self.by_op[func._schema.name] = self.by_op.get(func._schema.name, 0) + moved
        return out

    @contextmanager
    def kernels(self) -> Iterator[None]:
        """Within the block, interpreted Triton launches add their tensor arguments' bytes."""
        import triton.runtime.interpreter as interpreter

        original = interpreter.InterpretedFunction.run
        counter = self

        def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
            moved = sum(_nbytes(a) for a in (*args, *kwargs.values()) if isinstance(a, Tensor))
            counter.kernel_bytes += moved
            name = f"kernel {fn.fn.__name__}"
            counter.by_op[name] = counter.by_op.get(name, 0) + moved
            counter.paused = True  # the interpreter's own host copies are not GPU traffic
            try:
                return original(fn, *args, **kwargs)
            finally:
                counter.paused = False

        interpreter.InterpretedFunction.run = run
        try:
            yield
        finally:
            interpreter.InterpretedFunction.run = original


def _call(path: str, shape: dict[str, int], states: bool, backward: bool) -> Callable[[], None]:
    from gateloop import gate_loop

    q, k, v, log_a = make_op_inputs(shape, per_head=False, requires_grad=backward)
    B, _, H, dk = q.shape
    h0 = torch.zeros(B, H, dk, shape["dv"], dtype=torch.complex64, requires_grad=backward) if states else None
    leaves = [t for t in (q, k, v, log_a, h0) if t is not None]
    cotangents: list[Tensor] = []

    def once() -> None:
        for t in leaves:
            t.grad = None  # a fresh gradient each call: autograd's accumulation is not the op's traffic
        y, final = gate_loop(
            q, k, v, log_a=log_a, initial_state=h0, output_final_state=states, backend=path,  # type: ignore[arg-type]
        )  # fmt: skip
        if backward:
            outputs = [y] if final is None else [y, final]
            if not cotangents:  # made once, outside the count, as a training step receives them
                cotangents.extend(torch.randn_like(t) for t in outputs)
            torch.autograd.backward(outputs, cotangents)

    return once


def count(path: str, case: dict[str, Any], backward: bool) -> dict[str, Any]:
    """Bytes per element of [B, L, H] (PyTorch ops, kernels) for one call of ``path``."""
    from gateloop.ops.triton import siso_scan

    shape = case["count"]
    scan = sys.modules[siso_scan.__module__]
    policy = scan.split_over_chunks
    if path == "torch":
        os.environ["GATELOOP_NO_EXTENSION"] = "1"  # the CUDA torch path: no compiled CPU kernel
    if path == "triton-split":
        scan.split_over_chunks = lambda programs, device: True
    try:
        once = _call(path.removesuffix("-split"), shape, case.get("states", False), backward)
        once()  # warm: kernels imported and compiled outside the count
        counter = ByteCounter()
        with counter, counter.kernels():
            once()
    finally:
        os.environ.pop("GATELOOP_NO_EXTENSION", None)
        scan.split_over_chunks = policy
    elements = shape["B"] * shape["L"] * shape["H"]
    ops = {
        name: round(moved / elements, 1) for name, moved in sorted(counter.by_op.items(), key=lambda x: -x[1])
    }
    return {
        "torch_ops": counter.torch_bytes / elements,
        "kernels": counter.kernel_bytes / elements,
        "ops": ops,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--paths", default=",".join(PATHS))
    args = parser.parse_args()
    cases = comma_choices(parser, "--cases", args.cases, CASES, "case")
    paths = comma_choices(parser, "--paths", args.paths, PATHS, "path")
    results, rows = [], []
    for name in cases:
        case = CASES[name]
        full = case["full"]
        elements = full["B"] * full["L"] * full["H"]
        for path in paths:
            entry: dict[str, Any] = {"case": name, "path": path, **case}
            cells = []
            for key, backward in (("forward", False), ("forward_backward", True)):
                per = count(path, case, backward)
                total = (per["torch_ops"] + per["kernels"]) * elements
                floors = {gpu: total / bw for gpu, bw in BANDWIDTH.items()}
                entry[key] = {"bytes_per_element": per, "bytes": total, "floor_seconds": floors}
                cells += [
                    f"{per['torch_ops'] + per['kernels']:.0f} ({per['kernels']:.0f})",
                    f"{floors['H100'] * 1e3:.3f} / {floors['H200'] * 1e3:.3f}",
                ]
            results.append(entry)
            rows.append(f"| {name} | {path} | " + " | ".join(cells) + " |")
    env = environment()
    title = header("Bytes moved per element of [B, L, H] and the HBM floor at the full shape", env)
    table = "\n".join(
        [
            title,
            "S2: B4 L2048 H624 SISO, no states; S2-states: with h0 and the final state; M1: B4 L2048 H8 d64.",
            "Bytes per element: total (of which in Triton kernels); floor: ms on H100 / H200.",
            "",
            "| case | path | fwd bytes/elem | fwd floor ms | fwd+bwd bytes/elem | fwd+bwd floor ms |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    write_results("bytes_moved", env, results, table, cases={k: CASES[k] for k in cases})


if __name__ == "__main__":
    main()
