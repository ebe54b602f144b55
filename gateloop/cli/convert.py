"""``gateloop convert to-hf`` / ``from-hf``: runs to and from the Hugging Face format."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateloop.cli.common import non_negative_int

if TYPE_CHECKING:  # the handlers' type only: no torch import to build the parser
    from gateloop.training.distributed import Runtime


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    convert = commands.add_parser(
        "convert",
        help="convert a run to the Hugging Face format and back ([hf] extra), or its decoding step to ONNX "
        "([onnx] extra)",
    ).add_subparsers(dest="task", required=True, metavar="TASK")
    to_hf = convert.add_parser(
        "to-hf",
        parents=[common],
        help="a run (final/ or the latest checkpoint) or checkpoint -> AutoModelForCausalLM directory",
        description="Write config.json, model.safetensors (the same tensors, bit for bit) and, for a BPE "
        "dataset, tokenizer.json; load it with `import gateloop.hf` + AutoModelForCausalLM.from_pretrained, "
        "or with trust_remote_code=True.",
    )
    to_hf.add_argument("--run", type=Path, required=True, help="run directory, final/ or checkpoints/step_*/")
    to_hf.add_argument("--out", type=Path, required=True, help="Hugging Face model directory to write")
    to_hf.set_defaults(handler=convert_to_hf)
    from_hf = convert.add_parser(
        "from-hf",
        parents=[common],
        help="a Hugging Face GateLoop directory -> GateLoopLM.from_pretrained directory",
    )
    from_hf.add_argument(
        "--model", type=Path, required=True, help="directory from `convert to-hf`/save_pretrained"
    )
    from_hf.add_argument("--out", type=Path, required=True, help="gateloop model directory to write")
    from_hf.set_defaults(handler=convert_from_hf)
    consolidate = convert.add_parser(
        "consolidate",
        parents=[common],
        help="a sharded (FSDP, torch.distributed.checkpoint) checkpoint -> one model directory",
        description="Read the shards of checkpoints/step_N/ in this one process and write its model as "
        "config.json + model.safetensors (what final/ holds, what eval, sample and convert to-hf read).",
    )
    consolidate.add_argument(
        "--checkpoint", type=Path, required=True, help="a run's checkpoints/step_N/ written sharded"
    )
    consolidate.add_argument("--out", type=Path, required=True, help="model directory to write")
    consolidate.set_defaults(handler=consolidate_checkpoint)
    to_onnx = convert.add_parser(
        "to-onnx",
        parents=[common],
        help="a GateLoop run or model directory -> its one-token decoding step as an ONNX file",
        description="Export the decoding step (input_ids [batch], state [n_layer, batch, H, dk, dv, 2] -> "
        "logits, new state; the complex state as real pairs, the batch dynamic) and check it: greedy "
        "decoding with onnxruntime must give the model's own tokens. Needs the [onnx] extra.",
    )
    to_onnx.add_argument("--run", type=Path, required=True, help="run directory, final/, checkpoints/step_*/ "
                         "or a save_pretrained directory")  # fmt: skip
    to_onnx.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    to_onnx.add_argument(
        "--check-tokens",
        type=non_negative_int,
        default=20,
        help="greedy tokens to compare, onnxruntime against PyTorch, from a one-token prompt (0: no check)",
    )
    to_onnx.set_defaults(handler=convert_to_onnx)


def convert_to_hf(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.hf.convert import native_to_hf

    out = native_to_hf(args.run, args.out)
    tokenizer = (
        "with" if (out / "tokenizer.json").is_file() else "without (see gateloop_tokenizer in config.json)"
    )
    print(f"wrote {out.resolve()}, {tokenizer} tokenizer.json")
    return 0


def convert_from_hf(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.hf.convert import hf_to_native

    print(f"wrote {hf_to_native(args.model, args.out).resolve()}")
    return 0


def consolidate_checkpoint(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.training.sharded_checkpoint import consolidate

    print(f"wrote {consolidate(args.checkpoint, args.out).resolve()}")
    return 0


def convert_to_onnx(args: argparse.Namespace, runtime: Runtime | None) -> int:
    import torch

    from gateloop.export.onnx import compare_with_model, export_decode_step_onnx
    from gateloop.models.registry import load_pretrained
    from gateloop.training.checkpoint import resolve_model_dir

    model_dir, _ = resolve_model_dir(args.run)
    model = load_pretrained(model_dir, dtype=torch.float32).eval()
    path = export_decode_step_onnx(model, args.out)
    print(f"wrote {path.resolve()} (the decoding step of {model_dir})")
    if args.check_tokens > 0:
        check = compare_with_model(model, path, torch.zeros(1, 1, dtype=torch.long), args.check_tokens)
        verdict = "equal" if check["tokens_equal"] else "DIFFERENT"
        print(
            f"check: {check['new_tokens']} greedy tokens {verdict}, onnxruntime vs PyTorch; "
            f"max |logit difference| {check['max_abs_logit_diff']:.2e} "
            f"(max |logit| {check['max_abs_logit']:.1f})"
        )
        if not check["tokens_equal"]:
            return 1
    return 0
