"""``workbench search``: the evolutionary search for LongRoPE / LongRoPE2 factors, resumable from its journal."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..events import ConsoleSink
from ..search.config import PRESETS
from .args import (
    LENGTH,
    NON_NEGATIVE,
    POSITIVE,
    add_force,
    add_run_dir,
    add_threads,
    check_resume,
    load_factors,
    max_factor,
    rungs,
    set_threads,
)
from .jobs import accelerator, announce, preflight

TUNABLE = ("population", "parents", "mutants", "crossovers", "generations", "critical_dim", "critical_dim_span",
           "seed", "max_factor", "dtype", "chunk_tokens", "rungs", "rung_keep", "per_document")


def search_config(args: argparse.Namespace) -> Any:
    """The SearchConfig the options describe: the preset, then every option given."""
    from ..search import SearchConfig

    params: dict[str, Any] = dict(PRESETS[args.preset])
    params.update({name: getattr(args, name) for name in TUNABLE if getattr(args, name) is not None})
    if args.factors:
        params["user_seeds"] = tuple(tuple(load_factors(f)) for f in args.factors)
    return SearchConfig(target_length=args.target_length, mode=args.mode, corpus=args.corpus,
                        n_documents=args.documents, racing="off" if args.no_racing else args.racing,
                        n_hat_stage=not args.no_n_hat, **params)


def print_result(result: Any, run_dir: str) -> None:
    """The search's best against its seeds, its factors, and the held-out report when one was written."""
    from ..search import HeldoutReport

    print(result.summary())
    print("best factors: " + json.dumps([round(x, 2) for x in result.best_factors]))
    report = HeldoutReport.read(run_dir)
    if report is not None:
        print(report.summary())


def cmd_search(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..models import load_model
    from ..search import run_search

    set_threads(args)
    group = accelerator()
    config = search_config(args)
    check_resume(args, "search")
    est = preflight(args, "search", [(config.target_length, config.evaluations_budget * config.n_documents
                                      * config.per_document)], engine="stream", dtype=config.dtype,
                    chunk=config.chunk_tokens, remedy="give a smaller --chunk-tokens, --dtype bf16, or a shorter "
                                                      "--target-length")
    lm = load_model(args.model)
    if distributed.is_main():
        announce(est, lm.model)
        print(f"search: {args.model}, {config.mode} to {config.target_length} tokens, budget "
              f"{config.evaluations_budget} evaluations on {config.n_documents} {config.corpus} documents, "
              f"racing {config.racing}"
              f"{f', {distributed.world_size()} processes' if group else ''} -> {args.run_dir}", flush=True)
    result = run_search(lm.model, lm.tokenizer, config, args.run_dir, resume=args.resume, sink=ConsoleSink(),
                        model_name=args.model, report=not args.no_report, report_documents=args.report_documents)
    distributed.shutdown()
    if result is not None:
        print_result(result, args.run_dir)
    return 0


def add_parsers(sub: Any) -> None:
    """search."""
    sp = sub.add_parser("search", help="evolutionary search for LongRoPE / LongRoPE2 factors (resumable)")
    sp.add_argument("--model", default="teaching")
    sp.add_argument("--target-length", type=LENGTH, required=True)
    sp.add_argument("--mode", choices=["longrope", "longrope2"], default="longrope")
    add_run_dir(sp, resume="continue the search in --run-dir from its journal")
    sp.add_argument("--preset", choices=sorted(PRESETS), default="full",
                    help="full: the paper's budget; lean: a real model on a CPU (use with --rungs); small: minutes on a "
                         "CPU; tiny: seconds")
    for name in ("population", "parents", "mutants", "crossovers", "generations", "critical-dim",
                 "critical-dim-span", "seed"):
        sp.add_argument(f"--{name}", type=POSITIVE if name in ("population", "parents", "critical-dim") else NON_NEGATIVE)
    sp.add_argument("--max-factor", type=max_factor,
                    help="'1+s' (LongRoPE's default), '1.25s', '2s' (LongRoPE2's default) or a number >= s")
    sp.add_argument("--factors", action="append",
                    help="JSON file with a factor list to seed the population with (repeat for several)")
    sp.add_argument("--documents", type=POSITIVE, default=3, help="fitness documents (train split)")
    sp.add_argument("--per-document", type=POSITIVE, help="windows taken from each long document (default 2)")
    sp.add_argument("--dtype", choices=["fp32", "bf16"],
                    help="fp32 (default) or bf16: several times faster on CPUs with AVX512-BF16/AMX and on GPUs")
    sp.add_argument("--chunk-tokens", type=POSITIVE,
                    help="tokens read per step through the KV cache (default 4096); racing judges after each")
    sp.add_argument("--rungs", type=rungs,
                    help="multi-fidelity heuristic: prefix lengths, e.g. 8192,16384: every candidate is read to the "
                         "first, the best --rung-keep of them to the next, and only the last survivors whole")
    sp.add_argument("--rung-keep", type=float, help="fraction of a rung's candidates that go on (default 0.5)")
    sp.add_argument("--corpus", default="shakespeare")
    sp.add_argument("--racing", choices=["exact", "heuristic", "off"], default="exact",
                    help="stop hopeless candidates early. exact (default): only when their losses so far already "
                         "exceed what they must beat, so the result is the plain algorithm's; heuristic: also "
                         "guesses the remaining documents' losses from the best seen (saves more, may drop a "
                         "future parent); off: every candidate on every document")
    sp.add_argument("--no-racing", action="store_true", help="the same as --racing off")
    sp.add_argument("--no-n-hat", action="store_true", help="skip the n_hat stage")
    sp.add_argument("--no-report", action="store_true", help="skip the held-out report")
    sp.add_argument("--report-documents", type=POSITIVE, default=20)
    add_threads(sp, "torch threads per process")
    add_force(sp)
    sp.set_defaults(func=cmd_search)
