"""``workbench search``: the evolutionary search for LongRoPE / LongRoPE2 factors, resumable from its journal."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..events import ConsoleSink
from ..search.config import PRESETS
from .args import (
    LENGTH,
    NON_NEGATIVE,
    POSITIVE,
    CliError,
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
    from ..search import Journal, run_search

    set_threads(args)
    group = accelerator()
    config = search_config(args)
    check_resume(args, "search")
    kept = Journal.read(Path(args.run_dir), repair=False).settled if args.resume else 0
    per_eval = config.n_documents * config.per_document
    est = preflight(args, "search", [(config.target_length, max(config.evaluations_budget - kept, 0) * per_eval)],
                    engine="stream", dtype=config.dtype, chunk=config.chunk_tokens, kept=kept * per_eval,
                    remedy="give a smaller --chunk-tokens, --dtype bf16, or a shorter --target-length")
    lm = load_model(args.model)
    if distributed.is_main():
        announce(est, lm.model)
        print(f"search: {args.model}, {config.mode} to {config.target_length} tokens, budget "
              f"{config.evaluations_budget} evaluations on {config.n_documents} {config.corpus} documents, "
              f"racing {config.racing}"
              f"{f', {distributed.world_size()} processes' if group else ''} -> {args.run_dir}", flush=True)
    with terminate_as_interrupt():  # a kill's SIGTERM saves the candidate being read, as Ctrl-C does
        result = run_search(lm.model, lm.tokenizer, config, args.run_dir, resume=args.resume, sink=ConsoleSink(),
                            model_name=args.model, report=not args.no_report, report_documents=args.report_documents)
    distributed.shutdown()
    if result is not None:
        print_result(result, args.run_dir)
    return 0


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while inside (in the main thread; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def heldout_specs(args: argparse.Namespace, standing: Any) -> dict[str, Any]:
    """The settings of a search's held-out report: its best so far ("searched"), the methods it was seeded with,
    and each --factors list as LongRoPE factors with the search's attention factor (named after its file)."""
    from ..hf import spec_for_model
    from ..models import load_model_config

    c = standing.config
    config = load_model_config(standing.model)
    methods = args.methods or c["seed_methods"]
    for m in methods:
        if m not in c["seed_methods"]:
            raise CliError(f"--methods {m}: the search was seeded with {', '.join(c['seed_methods'])}; compare with "
                           "those (or give another factor list with --factors)")
    specs = {"searched": standing.best_spec()}
    specs.update({m: spec_for_model(config, m, target_length=c["target_length"]) for m in dict.fromkeys(methods)})
    for path in args.factors or []:
        name = Path(path).stem
        if name in specs:
            raise CliError(f"--factors {path!r}: the name {name!r} is taken; rename the file")
        specs[name] = spec_for_model(config, "longrope", target_length=c["target_length"],
                                     long_factor=load_factors(path), attention_policy=c["attention_policy"])
    return specs


def cmd_eval_heldout(args: argparse.Namespace) -> int:
    from ..models import load_model
    from ..search.heldout import heldout_windows, kept_forwards, run_heldout
    from ..search.standing import read_standing

    set_threads(args)
    standing = read_standing(args.run_dir)
    args.model, length = standing.model, standing.config["target_length"]
    dtype = args.dtype or standing.config["dtype"]
    folder = Path(args.report_dir or standing.folder / "heldout")
    if args.resume != (folder / "params.json").is_file():
        raise CliError(f"{folder} holds a held-out report: add --resume to go on with it, or give another "
                       "--report-dir" if not args.resume else f"--resume: {folder} holds no held-out report yet; "
                       "drop --resume to start one")
    specs = heldout_specs(args, standing)
    kept = kept_forwards(folder, specs) if args.resume else 0
    forwards = len(args.corpus) * args.windows * len(specs) - kept
    est = preflight(args, "eval heldout", [(length, forwards)], dtype=dtype, kept=kept,
                    remedy="give fewer --windows or --corpus, or --dtype bf16")
    lm = load_model(standing.model)
    announce(est, lm.model)
    print(standing.summary(), flush=True)
    windows = heldout_windows(lm.tokenizer, args.corpus, length, args.windows)
    identity = {"model": standing.model, "length": length, "corpora": args.corpus, "windows_per_corpus": args.windows,
                "dtype": dtype, "windows": [w.label for w in windows]}
    report = run_heldout(lm.model, windows, specs, folder, identity=identity, resume=args.resume, dtype=dtype,
                         mode=standing.config["mode"], sink=ConsoleSink())
    print(report.summary())
    print(report.markdown())
    print(report.window_markdown())
    print(f"wrote {folder / 'report.json'}")
    return 0


def add_heldout_parser(ev: Any) -> None:
    """eval heldout (in the eval group: it evaluates a search's result)."""
    p = ev.add_parser("heldout", help="a search's best factors against the methods it was seeded with (and any "
                                      "--factors) on held-out windows, one per document; resumable")
    p.add_argument("--run-dir", required=True, help="the search run folder, or a shipped one by name (smollm2-32k); "
                                                    "a running or stopped search: its best so far")
    p.add_argument("--report-dir", help="where the report and its journal go (default RUN_DIR/heldout)")
    p.add_argument("--resume", action="store_true", help="go on with the report in --report-dir (settings whose "
                                                         "spec is unchanged are not read again)")
    p.add_argument("--corpus", nargs="+", default=["shakespeare", "bible"], help="held-out corpora")
    p.add_argument("--windows", type=POSITIVE, default=4, help="windows per corpus, each from another document")
    p.add_argument("--methods", nargs="+", metavar="METHOD",
                   help="which of the methods the search was seeded with to compare (default: all of them); a later "
                        "--resume with more adds their forwards alone")
    p.add_argument("--factors", action="append",
                   help="a factor list (JSON) compared too, with the search's attention factor (repeat for several)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], help="default: the search's")
    add_threads(p, "torch threads")
    add_force(p)
    p.set_defaults(func=cmd_eval_heldout, path_kinds={"report_dir": "folder"})


def cmd_export_factors(args: argparse.Namespace) -> int:
    from ..search.standing import read_standing

    standing = read_standing(args.run_dir)
    factor_set = standing.factor_set(args.name, args.description or "")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(factor_set.to_dict(), indent=1) + "\n")
    print(standing.summary())
    print(f"wrote {out}: {factor_set.description}")
    return 0


def add_export_factors_parser(exp: Any) -> None:
    """export factors (in the export group)."""
    p = exp.add_parser("factors", help="a search run folder's best factors as a factor set with its provenance "
                                       "(a running search: its best so far, marked unfinished)")
    p.add_argument("--run-dir", required=True, help="the search run folder")
    p.add_argument("--name", required=True, help="the factor set's name")
    p.add_argument("--description", help="default: what the search was")
    p.add_argument("--out", required=True, help="the factor set JSON to write")
    p.set_defaults(func=cmd_export_factors)


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
