"""``workbench eval ppl|passkey|needle|entropy``: a model with or without a RoPE method, measured."""

from __future__ import annotations

import argparse
from typing import Any

from . import llamacpp, search
from .args import (
    LENGTH,
    NON_NEGATIVE,
    POSITIVE,
    CliError,
    add_force,
    add_run_dir,
    add_spec_args,
    check_method,
    refuse_config,
    spec_from_args,
)
from .jobs import announce, preflight, run_folder, sinks


def eval_setup(args: argparse.Namespace, forwards: list[tuple[int, int]], job: str,
               remedy: str = "ask for shorter --lengths, or fewer at once"):
    """The model, the spec, the label and the estimate; every argument is checked here, and the job's memory, before
    the model is loaded or the run folder written."""
    from ..models import load_model

    refuse_config(args, "eval", f"it reads --model {args.model!r} with the model's own config; pass the model folder "
                                "as --model (and --method for a RoPE setting)")
    check_method(args, factors_hint=", e.g. a search run's result.json or workbench/assets/factors/*.json")
    est = preflight(args, job, forwards, dtype=getattr(args, "dtype", "fp32"), remedy=remedy)
    lm = load_model(args.model)
    spec = spec_from_args(args, lm.model) if args.method else None
    label = args.label or (spec.method if spec is not None else "no scaling")
    return lm, spec, label, announce(est, lm.model)


def check_documents(docs: list, asked: int, args: argparse.Namespace, length: int) -> None:
    """The corpus gave as many samples of ``length`` tokens as were asked for."""
    if len(docs) < asked:
        raise CliError(f"--n-documents {asked} is not allowed here: the {args.split} split of {args.corpus!r} gives "
                       f"only {len(docs)} samples of {length} tokens; ask for at most {len(docs)}")


def ppl_rows(evaluate: Any, lengths: list[int], label: str, run: Any, engine: str = "") -> int:
    """Evaluate each length (a non-finite perplexity is an error), print a line each, write ppl.json if asked."""
    from ..evaluate import check_finite

    results = []
    for L in sorted(lengths):
        r = check_finite(evaluate(L))
        results.append(r)
        print(r.summary(engine))
    if run:
        print(f"wrote {run.write('ppl', results)}")
    return 0


def cmd_eval_ppl(args: argparse.Namespace) -> int:
    from ..data import samples
    from ..evaluate import perplexity

    if args.engine == "llama.cpp":
        return llamacpp.eval_ppl(args, ppl_rows)
    if args.model and args.model.endswith(".gguf"):
        raise CliError(f"--model {args.model!r} is a GGUF: evaluate it with --engine llama.cpp (the transformers "
                       "engine loads smollm2, teaching, tiny-random or a model folder)")
    if args.mode == "sliding" and args.stride > min(args.lengths):
        raise CliError(f"--stride {args.stride} is not allowed with --lengths {min(args.lengths)}: the window moves "
                       f"by at most its own length (give --stride <= {min(args.lengths)})")
    n = args.n_documents  # samples() gives n_documents windows; --per-document only spreads them over documents
    forwards = [(L, n if args.mode == "truncated" else n * (L // args.stride + 1)) for L in sorted(args.lengths)]
    lm, spec, label, est = eval_setup(args, forwards, "eval ppl")
    longest = max(args.lengths) if args.mode == "truncated" else max(args.lengths) * 2
    docs = samples(lm.tokenizer, args.corpus, args.split, longest, args.n_documents, per_document=args.per_document)
    check_documents(docs, args.n_documents, args, longest)
    run = run_folder(args, spec)
    sink = sinks(run, est)
    return ppl_rows(lambda L: perplexity(lm.model, docs, spec=spec, label=label, length=L, mode=args.mode,
                                         stride=args.stride, dtype=args.dtype, progress=False, sink=sink),
                    args.lengths, label, run)


def cmd_eval_passkey(args: argparse.Namespace) -> int:
    from ..evaluate import passkey_accuracy

    lm, spec, label, est = eval_setup(args, [(L, args.trials) for L in sorted(args.lengths)], "eval passkey")
    run = run_folder(args, spec)
    r = passkey_accuracy(lm.model, lm.tokenizer, sorted(args.lengths), n_trials=args.trials, spec=spec, label=label,
                         seed=args.seed, progress=False, sink=sinks(run, est))
    print(r.summary())
    if run:
        print(f"wrote {run.write('passkey', r)}")
    return 0


def needle_ppl(args: argparse.Namespace, lm: Any, spec: Any, label: str, est: Any) -> int:
    """eval needle --ppl: the perplexity of the answer tokens at each length."""
    from ..data import needle_samples
    from ..evaluate import check_finite, needle_perplexity

    out = []
    by_length = {L: needle_samples(lm.tokenizer, args.corpus, args.split, L, args.n_documents, args.needles,
                                   args.seed) for L in sorted(args.lengths)}
    run = run_folder(args, spec)
    sink = sinks(run, est)  # one console for every length: its time left counts all of them
    for docs in by_length.values():
        r = check_finite(needle_perplexity(lm.model, docs, spec=spec, label=label, dtype=args.dtype,
                                           progress=False, sink=sink))
        out.append(r)
        print(r.summary())
    if run:
        print(f"wrote {run.write('needle_ppl', out)}")
    return 0


def cmd_eval_needle(args: argparse.Namespace) -> int:
    from ..evaluate import needle_grid

    bad = [d for d in args.depths if not 0 <= d <= 1]
    if bad:
        raise CliError(f"--depths {bad} is not allowed: fractions of the document in [0, 1]")
    per_length = args.n_documents if args.ppl else 2 * len(args.depths) * args.trials  # grid: answer + its NLL
    lm, spec, label, est = eval_setup(args, [(L, per_length) for L in sorted(args.lengths)],
                                      "eval needle" + (" --ppl" if args.ppl else ""))
    if args.ppl:
        return needle_ppl(args, lm, spec, label, est)
    run = run_folder(args, spec)
    r = needle_grid(lm.model, lm.tokenizer, args.depths, sorted(args.lengths), n_trials=args.trials, source=args.corpus,
                    split=args.split, spec=spec, label=label, seed=args.seed, progress=False, sink=sinks(run, est))
    print(r.summary())
    print(r.markdown())
    if run:
        print(f"wrote {run.write('needle_grid', r)}")
    return 0


def cmd_eval_entropy(args: argparse.Namespace) -> int:
    from ..data import samples
    from ..entropy import attention_entropy, without_attention_factor

    runs = 2 if args.without_factor and args.method else 1
    lm, spec, label, est = eval_setup(args, [(args.length, runs)], "eval entropy", "ask for a shorter --length")
    doc = samples(lm.tokenizer, args.corpus, args.split, args.length, 1)[0]
    run = run_folder(args, spec)
    settings = [(label, spec)]
    if args.without_factor and spec is not None:
        settings.append((f"{label} without attention factor", without_attention_factor(spec)))
    out = []
    sink = sinks(run, est)
    for lab, sp in settings:
        r = attention_entropy(lm.model, doc.tokens, spec=sp, label=lab, layers=args.layers,
                              bucket_size=args.bucket_size, queries_per_bucket=args.queries_per_bucket,
                              sink=sink)
        out.append(r)
        print(r.summary())
    if run:
        print(f"wrote {run.write('entropy', out)}")
    return 0


def eval_parser(ev: Any, name: str, help: str) -> argparse.ArgumentParser:
    """One eval subcommand with the options every evaluation takes."""
    p = ev.add_parser(name, help=help)
    add_spec_args(p, method_required=False)
    p.set_defaults(model="teaching")
    add_run_dir(p, "write params.json, events.jsonl and the results JSON here")
    p.add_argument("--label", help="name of this setting in the results")
    p.add_argument("--corpus", default="shakespeare", help="shakespeare, bible or stdlib")
    p.add_argument("--split", default="heldout", choices=["heldout", "train"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"])
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    add_force(p)
    return p


def add_parsers(sub: Any) -> None:
    """eval ppl / passkey / needle / entropy / heldout."""
    ev = sub.add_parser("eval", help="evaluate a model with or without a RoPE method").add_subparsers(
        dest="eval_cmd", required=True)
    p = eval_parser(ev, "ppl", "perplexity and per-position loss")
    p.add_argument("--lengths", type=LENGTH, nargs="+", required=True)
    p.add_argument("--n-documents", type=POSITIVE, default=4)
    p.add_argument("--per-document", type=POSITIVE, default=1, help="non-overlapping windows per document")
    p.add_argument("--mode", choices=["truncated", "sliding"], default="truncated")
    p.add_argument("--stride", type=POSITIVE, default=256)
    p.add_argument("--engine", choices=["transformers", "llama.cpp"], default="transformers",
                   help="llama.cpp: run a GGUF (--model smollm2 or a .gguf) through llama-cpp-python; with --method "
                        "the GGUF is exported with it first")
    p.add_argument("--kv-type", choices=["f16", "f32"], default="f16", help="llama.cpp's KV cache type")
    p.set_defaults(func=cmd_eval_ppl)
    p = eval_parser(ev, "passkey", "passkey retrieval accuracy by length")
    p.add_argument("--lengths", type=LENGTH, nargs="+", required=True)
    p.add_argument("--trials", type=POSITIVE, default=5)
    p.set_defaults(func=cmd_eval_passkey)
    p = eval_parser(ev, "needle", "needle-in-a-haystack grid, or needle-driven perplexity with --ppl")
    p.add_argument("--lengths", type=LENGTH, nargs="+", required=True)
    p.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--trials", type=POSITIVE, default=1)
    p.add_argument("--ppl", action="store_true", help="needle-driven perplexity (answer tokens only)")
    p.add_argument("--n-documents", type=POSITIVE, default=4)
    p.add_argument("--needles", type=POSITIVE, default=3, help="needle copies per document (with --ppl)")
    p.set_defaults(func=cmd_eval_needle)
    p = eval_parser(ev, "entropy", "attention entropy by layer, head and position")
    p.add_argument("--length", type=LENGTH, required=True)
    p.add_argument("--layers", type=NON_NEGATIVE, nargs="+")
    p.add_argument("--bucket-size", type=POSITIVE)
    p.add_argument("--queries-per-bucket", type=POSITIVE)
    p.add_argument("--without-factor", action="store_true", help="also run with the attention factor set to 1")
    p.set_defaults(func=cmd_eval_entropy)
    search.add_heldout_parser(ev)
