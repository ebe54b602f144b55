"""``gateloop convert to-hf`` / ``from-hf``: runs to and from the Hugging Face format."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the handlers' type only: no torch import to build the parser
    from gateloop.training.distributed import Runtime


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    convert = commands.add_parser(
        "convert", help="convert a run to the Hugging Face format and back (needs the [hf] extra)"
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
