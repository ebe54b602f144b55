"""Patches that let fla-core's kernels run under Triton's CPU interpreter (``TRITON_INTERPRET=1``).

Applied only when interpreting, once, before fla is imported; they touch Triton's interpreter
internals and are written for triton 3.7.1 (the version torch 2.13's CUDA wheels pin and the
``cuda`` extra installs). On a GPU none of this runs. Each patch fixes one failure seen on CPU:

1. Autotuning calls ``triton.testing.do_bench``, which needs a GPU driver ("0 active drivers").
   Under the interpreter every autotuned kernel keeps its first config only (timing configs on a
   CPU says nothing about a GPU, and each extra config would rerun the kernel).
2. The interpreter hands ``for i in range(n)`` loop variables to kernel code as Python ints; fla
   calls ``i_t.to(tl.int64)`` on them. The loop variable is wrapped as a Triton scalar tensor.
3. The interpreter's ``tl.dot`` multiplies the raw bit patterns of bfloat16 operands
   (triton-lang/triton#11584); bfloat16 operands are upcast to float32 first.
4. Its element-wise float arithmetic and comparisons do the same to bfloat16 (stored as uint16),
   and it has no bfloat16 scalar constant (``get_bf16``, used by fla's backward): both computed
   in float32 and rounded to bfloat16.
5. Its ``tl.associative_scan`` with a user combine function calls the function once per
   *element* (a [64, 32] tile: 2 048 Python calls); it is called once per step along the scanned
   axis on whole slices instead: the same operations in the same order, ~30x faster.
"""

from __future__ import annotations

import ast
import time
import warnings
from collections.abc import Callable
from typing import Any

PINNED_TRITON = "3.7.1"
_applied = False


def _cpu_bench(fn: Callable[[], Any], quantiles: list[float] | None = None) -> float | list[float]:
    """A one-shot CPU timer in place of the GPU benchmark the autotuner would call."""
    start = time.perf_counter()
    fn()
    ms = (time.perf_counter() - start) * 1e3
    return [ms] * len(quantiles) if quantiles else ms


def _patch_autotuner() -> None:
    import triton.runtime.autotuner as autotuner

    autotuner.Autotuner.do_bench = property(lambda self: _cpu_bench)
    original_init = autotuner.Autotuner.__init__

    def first_config_only(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.configs = self.configs[:1]

    autotuner.Autotuner.__init__ = first_config_only


def _patch_loop_variables() -> None:
    import triton.runtime.interpreter as interpreter

    def visit_for(self: Any, node: ast.For) -> ast.For:
        self.generic_visit(node)
        it = node.iter
        is_range = isinstance(it, ast.Call) and (
            (isinstance(it.func, ast.Name) and it.func.id == "range")
            or (isinstance(it.func, ast.Attribute) and it.func.attr == "range")
        )
        if is_range and isinstance(node.target, ast.Name):
            # i = interpreter_semantic.to_tensor(i, False) as the loop body's first statement
            to_tensor = ast.Attribute(
                value=ast.Name(id="interpreter_semantic", ctx=ast.Load()), attr="to_tensor", ctx=ast.Load()
            )
            call = ast.Call(
                func=to_tensor,
                args=[ast.Name(id=node.target.id, ctx=ast.Load()), ast.Constant(False)],
                keywords=[],
            )
            wrap = ast.Assign(targets=[ast.Name(id=node.target.id, ctx=ast.Store())], value=call)
            node.body.insert(0, ast.fix_missing_locations(ast.copy_location(wrap, node)))
        return node

    interpreter.ASTTransformer.visit_For = visit_for


def _patch_bf16_dot() -> None:
    import numpy as np
    import triton.language as tl
    import triton.runtime.interpreter as interpreter

    original = interpreter.InterpreterBuilder.create_dot

    def upcast(x: Any) -> Any:
        if x.dtype.scalar == tl.bfloat16:
            data = interpreter._convert_float(x.data, tl.bfloat16, tl.float32, None).view(np.float32)
            return interpreter.TensorHandle(data, tl.float32)
        return x

    def create_dot(
        self: Any, a: Any, b: Any, d: Any, input_precision: Any, max_num_imprecise_acc: Any
    ) -> Any:
        return original(self, upcast(a), upcast(b), d, input_precision, max_num_imprecise_acc)

    interpreter.InterpreterBuilder.create_dot = create_dot


_BF16_ARITHMETIC = (
    "create_fadd",
    "create_fsub",
    "create_fmul",
    "create_fdiv",
    "create_precise_divf",
    "create_frem",
    "create_minimumf",
    "create_maximumf",
    "create_minnumf",
    "create_maxnumf",
)


def _patch_bf16_elementwise() -> None:
    import triton.language as tl
    import triton.runtime.interpreter as interpreter

    builder = interpreter.InterpreterBuilder
    compares = tuple(name for name in dir(builder) if name.startswith("create_fcmp"))

    def upcast(self: Any, x: Any) -> Any:
        return self.cast_impl(x, tl.float32) if x.dtype.scalar == tl.bfloat16 else x

    for name in (*_BF16_ARITHMETIC, *compares):
        original = getattr(builder, name)
        rounds = name in _BF16_ARITHMETIC

        def patched(self: Any, lhs: Any, rhs: Any, _original: Any = original, _rounds: bool = rounds) -> Any:
            if lhs.dtype.scalar != tl.bfloat16 and rhs.dtype.scalar != tl.bfloat16:
                return _original(self, lhs, rhs)
            out = _original(self, upcast(self, lhs), upcast(self, rhs))
            return self.cast_impl(out, tl.bfloat16) if _rounds else out

        setattr(builder, name, patched)
    builder.get_bf16 = lambda self, value: self.cast_impl(self.get_fp32(value), tl.bfloat16)


def _patch_vectorized_scan() -> None:
    import numpy as np
    import triton.language as tl
    import triton.runtime.interpreter as interpreter

    def generic_scan(self: Any, input: Any) -> list[Any]:
        datas = [arg.handle.data for arg in input]
        outputs = [np.empty_like(d) for d in datas]
        acc: tuple[Any, ...] | None = None
        for i in range(datas[0].shape[self.axis]):
            current = tuple(
                self.to_tensor(np.take(d, i, axis=self.axis), arg.dtype)
                for d, arg in zip(datas, input, strict=True)
            )
            if acc is None:
                acc = current
            else:
                combined = self.combine_fn.fn(*acc, *current)
                acc = combined if isinstance(combined, tuple) else (combined,)
            for out, value in zip(outputs, acc, strict=True):
                where = [slice(None)] * out.ndim
                where[self.axis] = i
                out[tuple(where)] = value.handle.data if isinstance(value, tl.core.tensor) else value
        return [self.to_tensor(out, arg.dtype) for out, arg in zip(outputs, input, strict=True)]

    interpreter.ScanOps.generic_scan = generic_scan


def apply_interpreter_patches() -> None:
    """Install the patches (idempotent). Call before importing any fla kernel module."""
    global _applied
    if _applied:
        return
    import triton

    if triton.__version__ != PINNED_TRITON:
        warnings.warn(
            f"gateloop's Triton-interpreter patches are written for triton {PINNED_TRITON}, found "
            f"{triton.__version__}; interpreted runs may fail (install the extra: pip install -e '.[cuda]')",
            stacklevel=3,
        )
    _patch_autotuner()
    _patch_loop_variables()
    _patch_bf16_dot()
    _patch_bf16_elementwise()
    _patch_vectorized_scan()
    _applied = True
