"""The Triton backends of ``gate_loop``: our own exact kernels, and GateLoop reduced to fla-core's.

Imported by the core, so this module must never import Triton itself: the kernels are loaded on
the first call (``_runtime.kernels``, ``siso_scan._kernels``). ``backend="triton"`` runs
one-dimensional heads (dk = dv = 1) on our complex scan (``siso_scan.py``: exact at vanishing
gates, states and ``cu_seqlens`` at full speed) and wider heads on fla's kernels;
``backend="fla"`` runs everything on fla's: per-key transitions on ``chunk_gla`` /
``fused_recurrent_gla`` with doubled keys, per-head ones on ``chunk_simple_gla``, one-dimensional
heads on the HGRN recurrences (``gla.py``, ``siso.py``; the reduction is in ``_rotation.py``).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch
from torch import Tensor

from gateloop.ops._inputs import OpInputs, Transitions
from gateloop.ops._nonfinite import run_causal
from gateloop.ops.triton._rotation import final_state_to_complex, realify, state_to_real
from gateloop.ops.triton._runtime import INSTALL_HINT, check_runnable, extra_installed, kernels
from gateloop.ops.triton.gla import gla_forward
from gateloop.ops.triton.siso import siso_forward
from gateloop.ops.triton.siso_scan import siso_scan

BACKENDS: tuple[str, ...] = ("auto", "triton", "fla", "torch")
TRITON_MODES: tuple[str, ...] = ("chunk", "recurrent")
_HALF = (torch.float16, torch.bfloat16)
_warned_no_extra = False

__all__ = ["BACKENDS", "TRITON_MODES", "gate_loop_triton", "use_triton"]


def use_triton(backend: str, mode: str, inputs: OpInputs, chunk_size: int | None) -> bool:
    """Resolve ``backend`` for these inputs; errors name what is missing for an explicit 'triton'."""
    device = inputs.q.device
    if backend == "torch":
        return False
    if backend == "auto":
        if device.type != "cuda":
            return False
        if not extra_installed():
            _warn_once_no_extra()
            return False
        # float64 is the exact reference path; an explicit chunk_size is a torch chunk-mode setting
        return mode in TRITON_MODES and inputs.compute_dtype != torch.float64 and chunk_size is None
    # "triton" and "fla" from here on: the errors name the backend asked for
    if mode not in TRITON_MODES:
        raise ValueError(f"backend={backend!r} implements mode 'chunk' or 'recurrent', got mode={mode!r}")
    if inputs.compute_dtype == torch.float64:
        raise TypeError(
            f"backend={backend!r} computes in float32 (bfloat16/float16 inputs too); got float64 "
            "inputs: use backend='torch' for the float64 path"
        )
    if chunk_size is not None:
        raise ValueError(
            f"chunk_size applies to backend='torch' only (the kernels pick their own); got {chunk_size}"
        )
    check_runnable(device, backend)
    return True


def _warn_once_no_extra() -> None:
    global _warned_no_extra
    if not _warned_no_extra:
        warnings.warn(
            f"gate_loop: CUDA tensors take the pure-PyTorch path because the Triton backend is not "
            f"installed; for GPU speed: {INSTALL_HINT}",
            stacklevel=4,
        )
        _warned_no_extra = True


def gate_loop_triton(
    inputs: OpInputs,
    *,
    mode: str,
    output_final_state: bool,
    cu_seqlens: Tensor | None,
    reduce_to_fla: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """GateLoop on Triton: our SISO scan for dk = dv = 1 unless ``reduce_to_fla``, else fla's kernels.

    ``inputs`` as validated by ``validate_sequence_inputs`` (their initial state (N, H, dk, dv)
    complex, N = number of sequences); ``cu_seqlens`` checked int [N+1].

    Returns y (B, L, H, dv) in the input dtype (float32 for float32, else bfloat16/float16) and the
    final state (N, H, dk, dv) complex64 or None. A NaN/Inf input reaches only the outputs that
    depend on it, as in the PyTorch modes (``_nonfinite``): the kernels never see it.
    """

    def on_finite(
        q: Tensor, k: Tensor, v: Tensor, transitions: Transitions, **packed: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        finite = replace(inputs, q=q, k=k, v=v, transitions=transitions)
        siso = q.shape[-1] == 1 and v.shape[-1] == 1
        if siso and not reduce_to_fla:  # both modes: the scan is exact, chunked and recurrent at once
            return siso_scan(finite, output_final_state=output_final_state, **packed)
        return _run_kernels(finite, mode=mode, output_final_state=output_final_state, **packed)

    return run_causal(on_finite, inputs.q, inputs.k, inputs.v, inputs.transitions, cu_seqlens=cu_seqlens)


def _run_kernels(
    inputs: OpInputs, *, mode: str, output_final_state: bool, cu_seqlens: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """``gate_loop_triton`` on fla's kernels, for finite inputs."""
    kern = kernels()
    log_mag, phase = inputs.transitions.as_log()  # (B, L, H, dk|1), floored at the float32 floor
    problem = realify(inputs.q, inputs.k, phase, cu_seqlens)  # q', k': (B, L, H, dk')
    h0 = inputs.initial_state  # (N, H, dk, dv) complex or None
    state = None if h0 is None else state_to_real(h0, problem.doubled)  # (N, H, dk', dv) float32
    offsets = None if cu_seqlens is None else cu_seqlens.long()  # fla indexes with int64 offsets
    common = {
        "scale": inputs.scale,
        "mode": mode,
        "output_final_state": output_final_state,
        "cu_seqlens": offsets,
        "kernels": kern,
    }
    siso = inputs.q.shape[-1] == 1 and inputs.v.shape[-1] == 1
    if siso:
        y, final = siso_forward(problem, inputs.v, log_mag, state, **common)
    else:
        work = inputs.out_dtype if inputs.out_dtype in _HALF else torch.float32
        y, final = gla_forward(problem, inputs.v, log_mag, state, work_dtype=work, **common)
    if final is not None:
        final = final_state_to_complex(final, problem, h0, log_mag, cu_seqlens)  # (N, H, dk, dv)
    return y, final
