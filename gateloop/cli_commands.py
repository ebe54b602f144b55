"""What each ``gateloop`` command does, given its parsed arguments and the process's runtime
(``cli.py`` builds the parser; this module only wires arguments to the library)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateloop.cli_flags import collect_overrides
from gateloop.training.distributed import Runtime

Command = Callable[[argparse.Namespace, Runtime | None], int]


def _base_run(
    args: argparse.Namespace, run_class: type, presets: dict[str, Any], default: str
) -> tuple[str, Any]:
    """(name, run config) from ``--config FILE`` or ``--preset`` (not both)."""
    if args.config is not None:
        if args.preset is not None:
            raise SystemExit("gateloop: error: --config and --preset exclude each other; give one")
        from gateloop.training.run_dir import check_run_config_format

        saved = json.loads(Path(args.config).read_text())
        check_run_config_format(saved, args.config)
        return args.config.stem, run_class.from_dict(saved)
    name = args.preset or default
    return name, presets[name]


def _mh_run(args: argparse.Namespace, default_preset: str) -> tuple[str, Any]:
    from gateloop.experiments.memory_horizon import PRESETS, MemoryHorizonRun, with_variant

    name, base = _base_run(args, MemoryHorizonRun, PRESETS, default_preset)
    return name, with_variant(base, getattr(args, "variant", None)).with_overrides(collect_overrides(args))


def _lm_run(args: argparse.Namespace) -> tuple[str, Any]:
    from gateloop.experiments.language_model import PRESETS, LMRun, build_run

    name, base = _base_run(args, LMRun, PRESETS, "cpu")
    model = getattr(args, "model", None)
    if model is None and args.config is None and hasattr(args, "model"):
        model = "gateloop"
    return name, build_run(base, model, collect_overrides(args))


def train_memory_horizon(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments import memory_horizon as mh

    name, run = _mh_run(args, "paper")
    out = args.out or Path("runs") / f"memory-horizon-{name}-{run.variant}"
    result = mh.train(run, out, resume=args.resume, progress=not args.no_progress, runtime=runtime)
    if runtime is None or runtime.is_main:
        print(json.dumps({"variant": run.variant, **result.summary()}, indent=2))
        print(f"wrote {out.resolve()}")
    return 0


def train_lm(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments import language_model as lm

    name, run = _lm_run(args)
    out = args.out or Path("runs") / f"lm-{name}-{run.model_name}"
    result = lm.train(run, out, resume=args.resume, progress=not args.no_progress, runtime=runtime)
    if runtime is None or runtime.is_main:
        print(json.dumps(result.summary(), indent=2))
        print(f"wrote {out.resolve()}")
    return 0


def eval_memory_horizon(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments.memory_horizon import evaluate_run
    from gateloop.experiments.span_report import write_comparison

    for run_dir in args.run:
        result, model_dir = evaluate_run(run_dir, device=runtime.device if runtime else None)
        print(json.dumps({k: v for k, v in result.items() if k != "accuracy_by_span"}, indent=2))
        print(f"evaluated {model_dir}; wrote {(run_dir / 'eval.json').resolve()}")
    if args.compare is not None:
        write_comparison(args.run, args.compare)
        print(f"wrote {(args.compare / 'report_table.md').resolve()}")
    return 0


def eval_lm(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments.language_model import evaluate_perplexity, load_run

    run, dataset, model = load_run(args.run, device=runtime.device if runtime else None)
    result = evaluate_perplexity(
        model, dataset[args.split], seq_len=run.data.seq_len, stride=args.stride, max_tokens=args.max_tokens
    )
    windows = (
        f" sliding by {result['stride']}" if result["stride"] != result["seq_len"] else ", non-overlapping"
    )
    protocol = (
        f"{args.split} perplexity of {args.run} = exp(mean NLL over {result['tokens']:,} tokens), "
        f"windows of {result['seq_len']} tokens{windows}"
    )
    print(f"{protocol}: {result['perplexity']:.3f}")
    (args.run / f"eval_{args.split}.json").write_text(json.dumps({**result, "protocol": protocol}, indent=2))
    return 0


def sample(args: argparse.Namespace, runtime: Runtime | None) -> int:
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


def data_prepare(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.data.prepare import prepare

    meta = prepare(
        args.corpus,
        args.out,
        path=args.path,
        tokenizer_name=args.tokenizer,
        vocab_size=args.vocab_size,
        gpt2_ranks=args.gpt2_ranks,
        workers=args.workers,
        progress=not args.no_progress,
    )
    for split, info in meta["splits"].items():
        print(f"{split:>5}: {info['tokens']:>11,} tokens in {info['documents']:>6,} documents")
    print(f"wrote {args.out.resolve()} (tokenizer {meta['tokenizer']['name']}, {meta['dtype']})")
    return 0


def experiment_memory_horizon(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments.memory_horizon_report import run_experiment

    name, run = _mh_run(args, "cpu")
    out = args.out or Path("runs") / f"memory-horizon-{name}"
    run_experiment(run, out, name=name, resume=args.resume, progress=not args.no_progress, runtime=runtime)
    return 0


def experiment_lm(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.experiments.language_model_report import run_experiment

    name, run = _lm_run(args)
    out = args.out or Path("runs") / f"lm-{name}"
    run_experiment(run, out, name=name, resume=args.resume, progress=not args.no_progress, runtime=runtime)
    return 0


def experiment_ablations(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop._validation import check_choice
    from gateloop.experiments.ablations import get_task, parse_seeds, parse_variants, run_grid

    task = get_task(args.ablation_task)
    name = args.preset or "cpu"
    check_choice("--preset", name, task.presets)
    out = args.out or Path("runs") / f"ablations-{task.name}-{name}"
    run_grid(
        task.name,
        task.presets[name],
        out,
        overrides=collect_overrides(args),
        variants=parse_variants(args.variants),
        seeds=parse_seeds(args.seeds),
        resume=args.resume,
        report_only=args.report,
        progress=not args.no_progress,
        runtime=runtime,
        name=name,
    )
    return 0


def eval_harness(args: argparse.Namespace, runtime: Runtime | None) -> int:
    from gateloop.hf.harness import evaluate_harness

    results = evaluate_harness(
        args.run,
        [task.strip() for task in args.tasks.split(",") if task.strip()],
        include_path=args.include_path,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=args.batch_size,
        device=str(runtime.device) if runtime else "cpu",
    )
    if runtime is not None and not runtime.is_main:
        return 0
    from lm_eval.utils import make_table

    print(make_table(results))
    out = args.out or (args.run / "harness.json")
    out.write_text(
        json.dumps(
            {k: results[k] for k in ("results", "versions", "n-shot") if k in results}, indent=2, default=str
        )
        + "\n"
    )
    print(f"wrote {out.resolve()}")
    return 0


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


COMMANDS: dict[tuple[str, str | None], Command] = {
    ("train", "memory-horizon"): train_memory_horizon,
    ("train", "lm"): train_lm,
    ("eval", "memory-horizon"): eval_memory_horizon,
    ("eval", "lm"): eval_lm,
    ("sample", None): sample,
    ("data", "prepare"): data_prepare,
    ("experiment", "memory-horizon"): experiment_memory_horizon,
    ("experiment", "lm"): experiment_lm,
    ("experiment", "ablations"): experiment_ablations,
    ("eval", "harness"): eval_harness,
    ("convert", "to-hf"): convert_to_hf,
    ("convert", "from-hf"): convert_from_hf,
}
