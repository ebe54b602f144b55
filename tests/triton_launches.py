"""Tier B's two halves: record the Triton launches the backend makes (under the interpreter), then
compile each for real GPUs (in a process without the interpreter) and read its shared memory.

Every kernel the backend launches is fla-core's; what is ours is how we launch them (the doubled
key width K = 2·dk, the 2H-channel HGRN, dtypes, varlen). Recording the launches of representative
calls and compiling exactly those (constexprs as launched; for autotuned kernels the first config
and the one with the largest blocks, or every config with --all-configs) checks that they compile
for sm_80 and sm_90 with the pinned Triton and fit the shared memory of an A100 / H100 block.

    python tests/triton_launches.py launches.json [--all-configs]    # prints one JSON line a compile
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import sys
import warnings
from collections.abc import Iterator
from typing import Any

# shared memory one block may use (opt-in maximum), by compute capability
SHARED_LIMIT = {80: 166_912, 90: 232_448}  # A100: 163 KB, H100: 227 KB
_TRITON_TYPES = {
    "float32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "float64": "fp64",
    "int32": "i32",
    "int64": "i64",
    "bool": "i1",
}


def _describe(value: Any) -> dict[str, Any]:
    """A launch argument as JSON: a tensor by its dtype, scalars and None by value."""
    import torch

    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype).removeprefix("torch.")}
    if value is None or isinstance(value, bool | int | float):
        return {type(value).__name__: value}
    raise TypeError(f"unexpected Triton launch argument {value!r}")


@contextlib.contextmanager
def recording() -> Iterator[list[dict[str, Any]]]:
    """Within the block, every interpreted kernel launch is appended to the yielded list."""
    import triton.runtime.interpreter as interpreter

    launches: list[dict[str, Any]] = []
    original = interpreter.InterpretedFunction.run

    def run(self: Any, *args: Any, grid: Any, warmup: Any, **kwargs: Any) -> Any:
        bound = dict(zip(self.arg_names, args, strict=False))
        bound.update({k: v for k, v in kwargs.items() if k in self.arg_names})
        launches.append(
            {
                "module": self.fn.__module__,
                "name": self.fn.__name__,
                "args": {k: _describe(v) for k, v in bound.items()},
            }
        )
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    interpreter.InterpretedFunction.run = run
    try:
        yield launches
    finally:
        interpreter.InterpretedFunction.run = original


def _kernel(module: str, name: str) -> tuple[Any, list[Any]]:
    """(the JITFunction, its autotuner's configs or [None])."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    obj = getattr(importlib.import_module(module), name)
    configs: list[Any] = [None]
    while not isinstance(obj, JITFunction):
        if isinstance(obj, Autotuner):
            configs = list(obj.configs)
        obj = obj.fn
    return obj, configs


def _chosen(configs: list[Any], every: bool) -> list[Any]:
    """The configs to compile: all, or the first and the one with the largest blocks and stages."""
    if every or configs[0] is None:
        return configs
    largest = max(
        configs, key=lambda c: (math.prod(v for v in c.kwargs.values() if isinstance(v, int)), c.num_stages)
    )
    return [configs[0]] if largest is configs[0] else [configs[0], largest]


def _source(jit: Any, args: dict[str, dict[str, Any]], config: Any) -> Any:
    """An ``ASTSource`` for one launch: pointer/scalar types from the arguments, constexpr values."""
    from triton.compiler import ASTSource

    values = {k: next(iter(v.values())) for k, v in args.items()}
    kinds = {k: next(iter(v)) for k, v in args.items()}
    if config is not None:
        values.update(config.kwargs)
    signature, constexprs = {}, {}
    for param in jit.params:
        value, kind = values.get(param.name), kinds.get(param.name)
        if param.is_constexpr or value is None:
            signature[param.name], constexprs[param.name] = "constexpr", value
        elif kind == "tensor":
            signature[param.name] = "*" + _TRITON_TYPES[value]
        elif kind == "bool":
            signature[param.name] = "i1"
        elif kind == "int":
            signature[param.name] = "i32" if -(2**31) <= value < 2**31 else "i64"
        else:
            signature[param.name] = "fp32"
    return ASTSource(jit, signature, constexprs)


def compile_launches(launches: list[dict[str, Any]], every: bool) -> Iterator[dict[str, Any]]:
    """Compile each distinct launch for sm_80 and sm_90; one result dict per compile."""
    import triton
    from triton.backends.compiler import GPUTarget

    seen = set()
    for launch in launches:
        jit, configs = _kernel(launch["module"], launch["name"])
        for config in _chosen(configs, every):
            key = json.dumps([launch["name"], launch["args"], str(config)], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            options = (
                {} if config is None else {"num_warps": config.num_warps, "num_stages": config.num_stages}
            )
            for capability, limit in SHARED_LIMIT.items():
                result = {"kernel": launch["name"], "config": str(config), "sm": capability, "limit": limit}
                try:
                    target = GPUTarget("cuda", capability, 32)
                    compiled = triton.compile(
                        _source(jit, launch["args"], config), target=target, options=options
                    )
                    result["shared"] = compiled.metadata.shared
                except Exception as error:  # reported, and the test names it
                    result["error"] = f"{type(error).__name__}: {str(error)[:300]}"
                yield result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("launches", help="JSON list written from recording()")
    parser.add_argument("--all-configs", action="store_true", help="every autotune config (minutes)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # fla: "Triton is not supported on current platform"
    with open(args.launches) as f:
        launches = json.load(f)
    for result in compile_launches(launches, args.all_configs):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
