"""``gateloop sample``: text from a trained language model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateloop.cli.common import positive_int

if TYPE_CHECKING:  # the handlers' type only: no torch import to build the parser
    from gateloop.training.distributed import Runtime


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    sample = commands.add_parser(
        "sample",
        parents=[common],
        help="generate text from a trained LM (O(1)-per-token steps for GateLoop)",
    )
    sample.add_argument("--run", type=Path, required=True, help="run directory of `gateloop train lm`")
    sample.add_argument("--prompt", default="", help="text to continue")
    sample.add_argument("--max-new-tokens", type=positive_int, default=100)
    sample.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    sample.add_argument("--top-k", type=positive_int, default=None)
    sample.add_argument("--top-p", type=float, default=None)
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(handler=sample_text)


def sample_text(args: argparse.Namespace, runtime: Runtime | None) -> int:
    import torch

    from gateloop.experiments.language_model import load_run

    device = runtime.device if runtime else torch.device("cpu")
    _, dataset, model = load_run(args.run, device=device)
    tokenizer = dataset.tokenizer()
    ids = tokenizer.encode(args.prompt) or [tokenizer.eot_id]
    out = model.eval().generate(
        torch.tensor([ids], device=device),
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        eos_token_id=tokenizer.eot_id,
        generator=torch.Generator(device=device).manual_seed(args.seed),
    )
    new = [t for t in out[0, len(ids) :].tolist() if t != tokenizer.eot_id]
    print(args.prompt + tokenizer.decode(new))
    return 0
