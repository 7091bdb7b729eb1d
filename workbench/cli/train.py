"""``workbench finetune``, ``workbench progressive`` and ``workbench launch``: training with a RoPE method applied,
the whole LongRoPE pipeline, and a notebook run headless."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..events import ConsoleSink
from .args import (
    LENGTH,
    NON_NEGATIVE,
    POSITIVE,
    add_force,
    add_run_dir,
    add_spec_args,
    add_threads,
    check_method,
    check_resume,
    finite_float,
    json_flag,
    parse_value,
    refuse_config,
    set_threads,
    spec_from_args,
)
from .jobs import announce, preflight


def train_config(args: argparse.Namespace) -> Any:
    """The TrainConfig the options describe."""
    from ..train import TrainConfig

    return TrainConfig(seq_len=args.seq_len, steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                       lr=args.lr, warmup=args.warmup, schedule=args.schedule, checkpoint_every=args.checkpoint_every,
                       mixed=args.mixed, dtype=args.dtype, gradient_checkpointing=args.gradient_checkpointing,
                       attn=args.attn, seed=args.seed, corpora=tuple(args.corpora))


def last_loss(run_dir: str) -> str:
    """"; last loss X" from a fine-tune folder's events (empty when none was recorded)."""
    from ..events import read_events

    try:
        steps = [e.data for e in read_events(Path(run_dir) / "events.jsonl") if e.kind == "train.step"]
    except (OSError, ValueError):
        return ""
    return f"; last loss {steps[-1]['loss']:.4f}" if steps and "loss" in steps[-1] else ""


def cmd_finetune(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..models import load_model
    from ..train import finetune

    set_threads(args)
    cfg = train_config(args)
    check_resume(args, "fine-tune")
    check_method(args)
    refuse_config(args, "finetune", f"the geometry comes from --model {args.model!r}'s own config")
    est = preflight(args, "finetune", [(cfg.seq_len, cfg.steps * cfg.grad_accum)],
                    engine="train-checkpointed" if cfg.gradient_checkpointing else "train",
                    dtype="fp32" if cfg.dtype == "auto" else cfg.dtype, batch=cfg.batch_size,
                    remedy="give a smaller --batch-size (with --grad-accum to keep the batch), "
                           "--gradient-checkpointing, or a shorter --seq-len")
    lm = load_model(args.model)
    announce(est, lm.model)
    spec = spec_from_args(args, lm.model)
    # under accelerate launch, finetune's Accelerator joins the process group from the environment
    result = finetune(lm.model, lm.tokenizer, spec, cfg, args.run_dir, resume=args.resume, model_name=args.model,
                      progress=not args.quiet)
    distributed.shutdown()
    if result.final_dir and not result.history and result.resumed_from == cfg.steps:
        print(f"{args.run_dir} was already complete: {cfg.steps} of {cfg.steps} steps{last_loss(args.run_dir)}; "
              f"nothing to do; the model is in {result.final_dir}")
    elif result.final_dir:
        last = result.history[-1] if result.history else {}
        print(f"fine-tuned {args.model} with {spec.method} for {result.steps} steps at {cfg.seq_len} tokens"
              f"{f' (resumed at step {result.resumed_from})' if result.resumed_from else ''}: last loss "
              f"{last.get('loss', float('nan')):.4f}; saved to {result.final_dir} (stock transformers loads it)")
    return 0


def cmd_progressive(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..progressive import STAGE_BUDGETS, ProgressiveConfig, run_progressive

    set_threads(args)
    budgets = {name: json_flag(f"--{name}", getattr(args, name)) for name in STAGE_BUDGETS if getattr(args, name)}
    cfg = ProgressiveConfig.with_overrides(args.stage1_length, args.stage2_length, corpus=args.corpus,
                                           eval_documents=args.eval_documents, seed=args.seed, **budgets)
    length, steps, batch, engine = cfg.finetune_plan()
    preflight(args, "progressive (its fine-tune)", [(length, steps)], engine=engine, batch=batch,
              remedy="give --train '{\"batch_size\": 1}' or shorter stage lengths")
    preflight(args, "progressive (its second search)", [(cfg.stage2_length, 1)], engine="stream",
              dtype=cfg.search2.get("dtype", "fp32"), remedy="give a shorter --stage2-length")

    result = run_progressive(args.model, cfg, args.run_dir, sink=ConsoleSink(train_every=20), progress=False)
    distributed.shutdown()
    if result is None:
        return 0
    print(result.report.markdown())
    print(f"{result.report.summary()}; {result.seconds:.0f} s; final model: {result.final_dir}")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from ..launch import launch

    params = {name: parse_value(value) for name, value in args.p or []}
    output = args.out or str(Path("runs") / "launch" / Path(args.notebook).name)
    result = launch(args.notebook, params, output, processes=args.processes)
    return 0 if result.ok else 1


def add_finetune_parser(sub: Any) -> None:
    """finetune."""
    ft = sub.add_parser("finetune", help="fine-tune with a RoPE method applied (accelerate; resumable)")
    add_spec_args(ft)
    ft.set_defaults(model="teaching")
    ft.add_argument("--seq-len", type=LENGTH, required=True, help="tokens per packed row")
    ft.add_argument("--steps", type=POSITIVE, default=400)
    ft.add_argument("--batch-size", type=POSITIVE, default=8, help="rows per micro-batch per process")
    ft.add_argument("--grad-accum", type=POSITIVE, default=1)
    ft.add_argument("--lr", type=finite_float(0.0), default=2e-5)
    ft.add_argument("--warmup", type=NON_NEGATIVE, default=40)
    ft.add_argument("--schedule", choices=["cosine", "linear"], default="cosine")
    ft.add_argument("--checkpoint-every", type=POSITIVE, default=50)
    ft.add_argument("--mixed", action="store_true", help="mixed context window training (LongRoPE2)")
    ft.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto")
    ft.add_argument("--gradient-checkpointing", action="store_true")
    ft.add_argument("--attn", choices=["auto", "sdpa", "flash_attention_2"], default="auto")
    ft.add_argument("--corpora", nargs="+", default=["shakespeare", "bible", "stdlib"])
    ft.add_argument("--seed", type=NON_NEGATIVE, default=0)
    add_run_dir(ft, resume="continue the fine-tune in --run-dir from its last checkpoint")
    add_threads(ft, "torch threads per process")
    add_force(ft)
    ft.add_argument("--quiet", action="store_true", help="no progress bar")
    ft.set_defaults(func=cmd_finetune)


def add_parsers(sub: Any) -> None:
    """finetune, progressive, launch."""
    add_finetune_parser(sub)
    pg = sub.add_parser("progressive", help="search -> fine-tune -> second search -> short-context recovery")
    pg.add_argument("--model", default="teaching")
    pg.add_argument("--stage1-length", type=LENGTH, required=True)
    pg.add_argument("--stage2-length", type=LENGTH, required=True)
    pg.add_argument("--run-dir", required=True, help="the pipeline resumes here at the stage where it stopped")
    for name in ("search1", "train", "search2", "recovery"):
        example = '{"steps": 60, "lr": 1e-3}' if name == "train" else '{"generations": 4}'
        pg.add_argument(f"--{name}", help=f"JSON overrides of the {name} budget, e.g. '{example}'")
    pg.add_argument("--corpus", default="shakespeare")
    pg.add_argument("--eval-documents", type=POSITIVE, default=8)
    pg.add_argument("--seed", type=NON_NEGATIVE, default=0)
    add_threads(pg, "torch threads per process")
    add_force(pg)
    pg.set_defaults(func=cmd_progressive)
    la = sub.add_parser("launch", help="run a notebook headless with parameters (papermill; N processes)")
    la.add_argument("notebook")
    la.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="a parameter (value as JSON)")
    la.add_argument("--processes", type=POSITIVE, default=1, help="processes (accelerate launch when > 1)")
    la.add_argument("--out", help="executed notebook path (default runs/launch/<name>)")
    la.set_defaults(func=cmd_launch)
