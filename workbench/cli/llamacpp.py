"""The llama.cpp side: ``workbench export gguf`` and ``workbench eval ppl --engine llama.cpp``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import search
from .args import CliError, add_spec_args, check_method, read_json, spec_from_args
from .jobs import run_folder, sinks


def gguf_source(model: str | None) -> Path:
    """The GGUF behind --model: the wheel's SmolLM2 for "smollm2", else a .gguf path."""
    if model == "smollm2":
        from ..models import smollm2_gguf_path

        return smollm2_gguf_path()
    if not model or not model.endswith(".gguf"):
        raise CliError(f"--model {model!r}: the llama.cpp side needs a GGUF: --model smollm2 (the wheel's Q4_1 "
                       "GGUF) or --model path/to/model.gguf")
    p = Path(model)
    if not p.is_file():
        raise CliError(f"--model {model!r} does not exist")
    return p


def spec_for_gguf(args: argparse.Namespace, source: Path):
    """A spec from the --method options with the GGUF's geometry (rope dims, freq_base, L0)."""
    from ..gguf import read_gguf

    check_method(args)
    info = read_gguf(source)
    ns = argparse.Namespace(**vars(args))
    ns.model, ns.config = None, None
    ns.head_dim = args.head_dim or info.rope_dimension_count
    ns.rope_theta = args.rope_theta or info.rope_theta
    ns.original = args.original or info.original_max_position_embeddings
    return spec_from_args(ns)


def spec_from_run(run_dir: str):
    """The best spec of a search run folder (its result.json)."""
    from ..rope import spec_from_dict

    path = Path(run_dir) / "result.json"
    if not path.is_file():
        raise CliError(f"{run_dir!r} has no result.json: not a finished search run folder")
    data = read_json(path, "search result")
    if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
        raise CliError(f"{path} has no best spec (did the search evaluate anything?)")
    return spec_from_dict(data["spec"])


def cmd_export_gguf(args: argparse.Namespace) -> int:
    from ..gguf import export_gguf

    source = gguf_source(args.model)
    if args.from_run:
        spec = spec_from_run(args.from_run)
    elif args.method:
        spec = spec_for_gguf(args, source)
    else:
        raise CliError("give --method (with --target) or --from-run SEARCH_RUN_DIR")
    result = export_gguf(spec, source, args.out)
    print(f"wrote {result.path} ({spec.describe()}; {result.bytes / 1e6:.1f} MB; from {source.name})")
    for key, value in result.metadata.items():
        if not key.startswith("workbench."):
            print(f"  {key} = {value}")
    if result.rope_freqs is not None:
        print("  rope_freqs.weight = [" + ", ".join(f"{x:.4g}" for x in result.rope_freqs) + "]")
    for n in result.notes:
        print(f"note: {n}", file=sys.stderr)
    return 0


def eval_ppl(args: argparse.Namespace, rows: Any) -> int:
    """Perplexity of a GGUF through llama-cpp-python; with --method the GGUF is exported with it first.
    ``rows(evaluate, lengths, label, run, engine)`` prints and writes the results."""
    import tempfile

    from .. import llamacpp
    from ..data import samples
    from ..estimate import TooLarge, check_fits
    from ..gguf import export_gguf, gguf_spec

    llamacpp.llama_cpp_module()  # one clear line when llama-cpp-python is missing
    if args.mode != "truncated":
        raise CliError("--engine llama.cpp evaluates truncated windows only (--mode truncated)")
    if args.dtype != "fp32":
        raise CliError("--dtype applies to the transformers engine; llama.cpp runs the GGUF's own weight types")
    source = gguf_source(args.model)
    est = llamacpp.estimate(source, [(L, args.n_documents) for L in sorted(args.lengths)], kv_type=args.kv_type)
    try:
        check_fits(est, force=args.force, remedy="ask for shorter --lengths, or fewer at once")
    except TooLarge as e:
        raise CliError(str(e)) from None
    est = est.with_rates(llamacpp.calibrate(source, kv_type=args.kv_type))
    print(est.line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="workbench-gguf-") as tmp:
        if args.method:
            spec = spec_for_gguf(args, source)
            path = export_gguf(spec, source, Path(tmp) / f"{spec.method}.gguf").path
        else:
            spec, path = gguf_spec(source), source
        label = args.label or (spec.method if spec is not None else "no scaling")
        tokenizer = llamacpp.gguf_tokenizer(path)
        docs = samples(tokenizer, args.corpus, args.split, max(args.lengths), args.n_documents,
                       per_document=args.per_document)
        run = run_folder(args, spec)
        sink = sinks(run, est)
        return rows(lambda L: llamacpp.perplexity(path, docs, label=label, length=L, kv_type=args.kv_type,
                                                  progress=False, sink=sink), args.lengths, label, run, " [llama.cpp]")


def add_parsers(sub: Any) -> None:
    """export gguf, export factors."""
    exp = sub.add_parser("export", help="export a RoPE setting into a model file").add_subparsers(
        dest="export_cmd", required=True)
    eg = exp.add_parser("gguf", help="copy a GGUF with a RoPE method carried as llama.cpp applies it")
    add_spec_args(eg, method_required=False)
    eg.set_defaults(model="smollm2")
    eg.add_argument("--from-run", metavar="DIR", help="take the best spec of a search run folder (result.json)")
    eg.add_argument("--out", required=True, help="output .gguf (never the source)")
    eg.set_defaults(func=cmd_export_gguf)
    search.add_export_factors_parser(exp)
