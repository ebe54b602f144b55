"""ONNX export of a GateLoop LM's one-token decoding step, and a runner for the exported file.

The graph is ``RealStateDecodeStep``: inputs ``input_ids`` int64 [batch] and ``state`` float
[n_layer, batch, H, dk, dv, 2] (each layer's complex state as (real, imaginary) pairs: ONNX
runtimes have no complex tensors), outputs ``logits`` [batch, V] and ``new_state`` (the state's
shape). The batch size is dynamic. A prompt is fed one token at a time from the zero state
(recurrent prefill: O(1) memory, the same result as the parallel forward), or the state of a
PyTorch prefill is passed in (``real_state(cache.states)``).

Needs the ``[onnx]`` extra (onnx, onnxscript for torch's exporter, onnxruntime for ``OnnxDecoder``),
imported inside the functions: ``import gateloop.export.onnx`` loads none of them.

Example (skipped without the extra)::

    export_decode_step_onnx(model, "step.onnx")
    decoder = OnnxDecoder("step.onnx")
    tokens, logits = decoder.greedy([[3, 5, 7]], max_new_tokens=20)
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gateloop.models.gateloop_lm import GateLoopLM
from gateloop.models.generation import decode_step, prefill
from gateloop.models.real_state_step import RealStateDecodeStep, real_state, state_shape, zero_real_state

INPUT_NAMES = ("input_ids", "state")
OUTPUT_NAMES = ("logits", "new_state")
EXPORTABLE_DTYPES = (torch.float32, torch.float64, torch.float16)  # what ONNX runtimes run on CPU


def export_decode_step_onnx(model: GateLoopLM, path: str | Path, *, opset: int | None = None) -> Path:
    """Write ``model``'s decoding step to ``path`` as ONNX; returns the path.

    The model is exported in eval mode (no dropout) and left in the mode it was in. The file's
    metadata records the model config (``gateloop_config``, JSON), the state layout
    (``state_shape`` with ``batch`` for the dynamic size) and the gateloop version. TypeError for
    a model that is not a ``GateLoopLM``; ValueError for bfloat16 weights (ONNX runtimes lack it
    on CPU: export ``model.float()``).
    """
    onnx = _require("onnx")
    _require("onnxscript")  # torch.onnx's exporter imports it

    from gateloop import __version__

    step = RealStateDecodeStep(model)
    dtype = model.embed.weight.dtype
    if dtype not in EXPORTABLE_DTYPES:
        raise ValueError(f"model weights must be one of {EXPORTABLE_DTYPES} to export, got {dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    example = (torch.zeros(2, dtype=torch.long, device=model.embed.weight.device), zero_real_state(model, 2))
    was_training = model.training
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on optional ops (torchvision) and renames
            program = torch.onnx.export(
                step.eval(),  # the model with it: no dropout in the graph
                example,
                dynamo=True,
                dynamic_shapes=({0: batch}, {1: batch}),
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                verbose=False,
            )
    finally:
        model.train(was_training)
    assert program is not None
    program.save(str(path))
    proto = onnx.load(str(path))
    metadata = {
        "gateloop_version": __version__,
        "gateloop_config": json.dumps(model.config.to_dict(), sort_keys=True),
        "state_shape": json.dumps(["batch" if i == 1 else n for i, n in enumerate(state_shape(model, 1))]),
        "inputs": "input_ids int64 [batch]; state [n_layer, batch, H, dk, dv, 2] (real, imaginary)",
    }
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


def _require(module: str) -> Any:
    """``import module``, or an ImportError that says which extra brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f'ONNX export needs {module}: pip install "gateloop-torch[onnx]" ({e})') from e


class OnnxDecoder:
    """Runs an exported decoding step with onnxruntime (numpy in, numpy out).

    ``step(ids, state)`` is one call of the graph; ``prefill(prompts)`` feeds [B, L] prompt ids
    one column at a time from the zero state; ``greedy(prompts, n)`` continues them by n tokens.
    """

    def __init__(self, path: str | Path, *, providers: list[str] | None = None) -> None:
        onnxruntime = _require("onnxruntime")
        self.session = onnxruntime.InferenceSession(
            str(path), providers=providers or ["CPUExecutionProvider"]
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        if "state_shape" not in meta:
            raise ValueError(f"{path} is not a gateloop decode step (no state_shape in its metadata)")
        self.state_layout: list[Any] = json.loads(meta["state_shape"])  # n_layer, "batch", H, dk, dv, 2
        self.config: dict[str, Any] = json.loads(meta["gateloop_config"])
        state_input = next(i for i in self.session.get_inputs() if i.name == "state")
        self.dtype = np.dtype(
            {"tensor(float)": "float32", "tensor(double)": "float64"}.get(state_input.type, "float16")
        )

    def zero_state(self, batch_size: int) -> np.ndarray:
        shape = [batch_size if n == "batch" else n for n in self.state_layout]
        return np.zeros(shape, dtype=self.dtype)

    def step(self, ids: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ids int64 [B], state [n_layer, B, H, dk, dv, 2] -> (logits [B, V], new state)."""
        logits, new_state = self.session.run(
            list(OUTPUT_NAMES), {"input_ids": ids.astype(np.int64), "state": state}
        )
        return logits, new_state

    def prefill(self, prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """prompts int [B, L] (L >= 1) -> (logits after the last column [B, V], state)."""
        prompts = np.asarray(prompts, dtype=np.int64)
        if prompts.ndim != 2 or prompts.shape[1] == 0:
            raise ValueError(f"prompts must be ids of shape [B, L] with L >= 1, got {prompts.shape}")
        state = self.zero_state(prompts.shape[0])
        for column in prompts.T:
            logits, state = self.step(column, state)
        return logits, state

    def greedy(self, prompts: np.ndarray, max_new_tokens: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Greedy continuation: (new tokens [B, max_new_tokens], the logits each was chosen from)."""
        logits, state = self.prefill(prompts)
        tokens, every_logits = [], []
        for i in range(max_new_tokens):
            every_logits.append(logits)
            token = logits.argmax(-1)
            tokens.append(token)
            if i + 1 < max_new_tokens:
                logits, state = self.step(token, state)
        return np.stack(tokens, axis=1) if tokens else np.zeros((len(logits), 0), np.int64), every_logits


@torch.no_grad()
def compare_with_model(
    model: GateLoopLM, path: str | Path, prompts: torch.Tensor, max_new_tokens: int = 20
) -> dict[str, Any]:
    """Greedy-decode ``prompts`` [B, L] with the ONNX file and with ``model`` (PyTorch, parallel
    prefill): {"tokens_equal", "max_abs_logit_diff", "max_abs_logit", "new_tokens"}. The model is
    run in eval mode and left as it was."""
    decoder = OnnxDecoder(path)
    onnx_tokens, onnx_logits = decoder.greedy(prompts.cpu().numpy(), max_new_tokens)
    was_training = model.training
    try:
        model.eval()
        logits, cache = prefill(model, prompts)
        ours_tokens, worst, largest = [], 0.0, 0.0
        for i in range(max_new_tokens):
            token = logits.argmax(-1)
            ours_tokens.append(token)
            worst = max(worst, float(np.abs(onnx_logits[i] - logits.float().cpu().numpy()).max()))
            largest = max(largest, float(logits.abs().max()))
            if i + 1 < max_new_tokens:
                logits = decode_step(model, token, cache)
    finally:
        model.train(was_training)
    ours = torch.stack(ours_tokens, dim=1).cpu().numpy()
    return {
        "tokens_equal": bool((ours == onnx_tokens).all()),
        "max_abs_logit_diff": worst,
        "max_abs_logit": largest,
        "new_tokens": int(ours.size),
    }


__all__ = ["OnnxDecoder", "compare_with_model", "export_decode_step_onnx", "real_state"]
