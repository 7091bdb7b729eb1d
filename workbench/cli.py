"""Command line: ``workbench ...`` or ``python -m workbench ...``.

    workbench rope show --model smollm2 --method yarn --target 16384
    workbench rope export --model smollm2 --method longrope --target 16384 --factors f.json --out config.json
    workbench doctor path/to/config.json
    workbench demo --out runs/demo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .hf import (
    ConfigError,
    NotExpressibleError,
    doctor,
    export_config,
    load_config_dict,
    model_geometry,
)
from .rope import SpecError, available_methods, make_spec
from .rope.diagnostics import format_pair_table, pair_diagnostics


class CliError(Exception):
    """A user error worth one line, not a traceback."""


def _parse_value(text: str) -> Any:
    if text.startswith("@"):
        return _load_factors(text[1:])
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _load_factors(path: str) -> list[float]:
    """A factor list from a JSON file: a bare list, {"long_factor": [...]}, or an exported config."""
    p = Path(path)
    if not p.exists():
        raise CliError(f"factor file {path!r} does not exist")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CliError(f"factor file {path!r} is not JSON: {e.msg}") from None
    for key in ("long_factor", "factors", "best_factors"):
        if isinstance(data, dict) and key in data:
            return data[key]
    if isinstance(data, dict) and isinstance(data.get("rope_parameters"), dict):
        return data["rope_parameters"]["long_factor"]
    if isinstance(data, list):
        return data
    raise CliError(f"no factor list found in {path!r}")


def _geometry_source(args: argparse.Namespace) -> Any:
    if args.config:
        return args.config
    if args.model:
        if args.model in ("smollm2", "tiny-random"):
            from .models import load_model

            return load_model(args.model).model.config
        return args.model
    return None


def _spec_from_args(args: argparse.Namespace, model: Any = None):
    params: dict[str, Any] = {}
    for item in args.param or []:
        if "=" not in item:
            raise CliError(f"--param {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        params[k.strip()] = _parse_value(v)
    if args.factors:
        params["long_factor"] = _load_factors(args.factors)
    if args.n_hat is not None:
        params["n_hat"] = args.n_hat
    source = model if model is not None else _geometry_source(args)
    if source is not None:
        g = model_geometry(source)
        geom = dict(head_dim=g.head_dim, rope_theta=g.rope_theta,
                    original_max_position_embeddings=g.original_max_position_embeddings)
    else:
        geom = {}
    for key, attr in (("head_dim", "head_dim"), ("rope_theta", "rope_theta"),
                      ("original_max_position_embeddings", "original")):
        if getattr(args, attr) is not None:
            geom[key] = getattr(args, attr)
    missing = {"head_dim", "rope_theta", "original_max_position_embeddings"} - set(geom)
    if missing:
        raise CliError(f"give --model/--config or all of --head-dim, --rope-theta, --original (missing {sorted(missing)})")
    return make_spec(args.method, **geom, target_length=args.target, factor=args.factor, **params)


def _add_spec_args(p: argparse.ArgumentParser, method_required: bool = True) -> None:
    p.add_argument("--method", required=method_required, choices=available_methods(),
                   help=None if method_required else "RoPE method to apply (default: the model as loaded)")
    p.add_argument("--model", help="smollm2, tiny-random, or a local model folder (geometry source)")
    p.add_argument("--config", help="a config.json (geometry source)")
    p.add_argument("--head-dim", type=int)
    p.add_argument("--rope-theta", type=float)
    p.add_argument("--original", type=int, help="original_max_position_embeddings (L0)")
    p.add_argument("--target", type=int, help="target length L")
    p.add_argument("--factor", type=float, help="extension ratio s (instead of --target)")
    p.add_argument("--factors", help="JSON file with the per-pair long_factor (LongRoPE)")
    p.add_argument("--n-hat", type=int, help="LongRoPE start-token window")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="method parameter, value as JSON (or @file.json), e.g. beta_fast=16")


def cmd_rope_show(args: argparse.Namespace) -> int:
    spec = _spec_from_args(args)
    diag = pair_diagnostics(spec, args.length)
    if args.json:
        print(json.dumps({"spec": spec.to_dict(), "pairs": diag.rows(), "attention_factor": diag.attention_factor,
                          "critical_dim": diag.critical_dim}, indent=1))
    else:
        print(spec.describe())
        print(format_pair_table(diag, every=args.every))
    return 0


def cmd_rope_export(args: argparse.Namespace) -> int:
    spec = _spec_from_args(args)
    source = _geometry_source(args)
    base = load_config_dict(source) if source is not None else {}
    try:
        full, notes = export_config(spec, base, args.layout, allow_lossy=args.allow_lossy)
    except NotExpressibleError as e:
        raise CliError(str(e)) from None
    text = json.dumps(full, indent=2, default=str)
    if args.save_model:
        _save_model(args, full)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out} ({spec.describe()})")
    else:
        print(text)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    return 0


def _save_model(args: argparse.Namespace, full: dict[str, Any]) -> None:
    """Write weights + tokenizer + the exported config: a folder stock transformers loads as is."""
    from .hf import hf_config_from_dict
    from .models import load_model

    if not args.model:
        raise CliError("--save-model needs --model (the weights to save)")
    lm = load_model(args.model)
    lm.model.config = hf_config_from_dict(full)
    lm.model.save_pretrained(args.save_model)
    lm.tokenizer.save_pretrained(args.save_model)
    print(f"saved {args.model} with {full['rope_parameters']['rope_type'] if 'rope_parameters' in full else 'rope_scaling'} "
          f"RoPE to {args.save_model}; load it with AutoModelForCausalLM.from_pretrained({args.save_model!r})")


def cmd_doctor(args: argparse.Namespace) -> int:
    source: Any = args.config
    if args.config in ("smollm2", "tiny-random"):
        from .models import load_model

        source = load_model(args.config).model.config
    report = doctor(source)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report)
    return 0 if report.ok else 1


def _eval_setup(args: argparse.Namespace):
    from .models import load_model
    from .runs import RunFolder

    lm = load_model(args.model)
    spec = None
    if args.method:
        if args.target is None and args.factor is None:
            raise CliError("--method needs --target (or --factor): the length the method extends to")
        spec = _spec_from_args(args, lm.model)
    params = {k: v for k, v in vars(args).items() if k != "func"}
    run = RunFolder(args.run_dir, params, spec) if args.run_dir else None
    label = args.label or (spec.method if spec is not None else "no scaling")
    return lm, spec, run, label


def _sinks(run: Any) -> Any:
    from .events import fan_out

    return fan_out([run.sink if run else None])


def cmd_eval_ppl(args: argparse.Namespace) -> int:
    from .data import samples
    from .evaluate import perplexity

    lm, spec, run, label = _eval_setup(args)
    longest = max(args.lengths) if args.mode == "truncated" else max(args.lengths) * 2
    docs = samples(lm.tokenizer, args.corpus, args.split, longest, args.n_documents, per_document=args.per_document)
    results = []
    for L in sorted(args.lengths):
        r = perplexity(lm.model, docs, spec=spec, label=label, length=L, mode=args.mode, stride=args.stride,
                       dtype=args.dtype, sink=_sinks(run))
        results.append(r)
        print(f"{label} @ {L}: PPL {r.ppl:.3f} (last quarter {r.tail_ppl():.3f}; {r.n_documents} documents, "
              f"{r.seconds:.1f} s)")
    if run:
        print(f"wrote {run.write('ppl', results)}")
    return 0


def cmd_eval_passkey(args: argparse.Namespace) -> int:
    from .evaluate import passkey_accuracy

    lm, spec, run, label = _eval_setup(args)
    r = passkey_accuracy(lm.model, lm.tokenizer, sorted(args.lengths), n_trials=args.trials, spec=spec, label=label,
                         seed=args.seed, sink=_sinks(run))
    for L, acc in zip(r.lengths, r.accuracy, strict=True):
        print(f"{label} passkey @ {L}: {acc:.0%} of {args.trials}")
    if run:
        print(f"wrote {run.write('passkey', r)}")
    return 0


def cmd_eval_needle(args: argparse.Namespace) -> int:
    from .data import needle_samples
    from .evaluate import needle_grid, needle_perplexity

    lm, spec, run, label = _eval_setup(args)
    if args.ppl:
        out = []
        for L in sorted(args.lengths):
            docs = needle_samples(lm.tokenizer, args.corpus, args.split, L, args.n_documents, args.needles, args.seed)
            r = needle_perplexity(lm.model, docs, spec=spec, label=label, dtype=args.dtype, sink=_sinks(run))
            out.append(r)
            print(f"{label} needle-driven PPL @ {L}: {r.ppl:.3f} ({r.n_documents} documents, answer tokens only)")
        if run:
            print(f"wrote {run.write('needle_ppl', out)}")
        return 0
    r = needle_grid(lm.model, lm.tokenizer, args.depths, sorted(args.lengths), n_trials=args.trials, source=args.corpus,
                    split=args.split, spec=spec, label=label, seed=args.seed, sink=_sinks(run))
    print(f"{label} needle accuracy (rows: depth, columns: {r.lengths}):")
    for d, row in zip(r.depths, r.accuracy, strict=True):
        print(f"  {d:5.2f}  " + "  ".join(f"{x:4.0%}" for x in row))
    if run:
        print(f"wrote {run.write('needle_grid', r)}")
    return 0


def cmd_eval_entropy(args: argparse.Namespace) -> int:
    from .data import samples
    from .entropy import attention_entropy, without_attention_factor

    lm, spec, run, label = _eval_setup(args)
    doc = samples(lm.tokenizer, args.corpus, args.split, args.length, 1)[0]
    settings = [(label, spec)]
    if args.without_factor and spec is not None:
        settings.append((f"{label} without attention factor", without_attention_factor(spec)))
    out = []
    for lab, sp in settings:
        r = attention_entropy(lm.model, doc.tokens, spec=sp, label=lab, layers=args.layers,
                              bucket_size=args.bucket_size, queries_per_bucket=args.queries_per_bucket,
                              sink=_sinks(run))
        out.append(r)
        pos = r.by_position()
        print(f"{lab} @ {r.length}: mean entropy {sum(pos) / len(pos):.3f} nats (first bucket {pos[0]:.3f}, "
              f"last {pos[-1]:.3f}; uniform would be {r.uniform_reference()[-1]:.3f}), {r.seconds:.1f} s")
    if run:
        print(f"wrote {run.write('entropy', out)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="LongRoPE Workbench: RoPE context extension")
    sub = parser.add_subparsers(dest="command", required=True)

    rope = sub.add_parser("rope", help="inspect and export RoPE settings").add_subparsers(dest="rope_cmd", required=True)
    show = rope.add_parser("show", help="per-pair diagnostics of a method")
    _add_spec_args(show)
    show.add_argument("--length", type=int, help="evaluate at this sequence length (default: target)")
    show.add_argument("--every", type=int, default=1, help="show every k-th pair")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_rope_show)
    export = rope.add_parser("export", help="write a transformers config with the method")
    _add_spec_args(export)
    export.add_argument("--layout", choices=["v5", "v4"], default="v5", help="rope_parameters (v5) or rope_scaling (v4)")
    export.add_argument("--allow-lossy", action="store_true", help="drop what stock transformers cannot express")
    export.add_argument("--out", help="output config.json (default: print)")
    export.add_argument("--save-model", metavar="DIR", help="also save --model's weights and tokenizer with this config")
    export.set_defaults(func=cmd_rope_export)

    doc = sub.add_parser("doctor", help="explain a model config's RoPE setting and flag inconsistencies")
    doc.add_argument("config", help="config.json, a model folder, or smollm2")
    doc.add_argument("--json", action="store_true")
    doc.set_defaults(func=cmd_doctor)

    ev = sub.add_parser("eval", help="evaluate a model with or without a RoPE method").add_subparsers(
        dest="eval_cmd", required=True)

    def eval_parser(name: str, help: str) -> argparse.ArgumentParser:
        p = ev.add_parser(name, help=help)
        _add_spec_args(p, method_required=False)
        p.set_defaults(model="teaching")
        p.add_argument("--run-dir", help="write params.json, events.jsonl and the results JSON here")
        p.add_argument("--label", help="name of this setting in the results")
        p.add_argument("--corpus", default="shakespeare", help="shakespeare, bible or stdlib")
        p.add_argument("--split", default="heldout", choices=["heldout", "train"])
        p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"])
        p.add_argument("--seed", type=int, default=0)
        return p

    p = eval_parser("ppl", "perplexity and per-position loss")
    p.add_argument("--lengths", type=int, nargs="+", required=True)
    p.add_argument("--n-documents", type=int, default=4)
    p.add_argument("--per-document", type=int, default=1, help="non-overlapping windows per document")
    p.add_argument("--mode", choices=["truncated", "sliding"], default="truncated")
    p.add_argument("--stride", type=int, default=256)
    p.set_defaults(func=cmd_eval_ppl)
    p = eval_parser("passkey", "passkey retrieval accuracy by length")
    p.add_argument("--lengths", type=int, nargs="+", required=True)
    p.add_argument("--trials", type=int, default=5)
    p.set_defaults(func=cmd_eval_passkey)
    p = eval_parser("needle", "needle-in-a-haystack grid, or needle-driven perplexity with --ppl")
    p.add_argument("--lengths", type=int, nargs="+", required=True)
    p.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--trials", type=int, default=1)
    p.add_argument("--ppl", action="store_true", help="needle-driven perplexity (answer tokens only)")
    p.add_argument("--n-documents", type=int, default=4)
    p.add_argument("--needles", type=int, default=3, help="needle copies per document (with --ppl)")
    p.set_defaults(func=cmd_eval_needle)
    p = eval_parser("entropy", "attention entropy by layer, head and position")
    p.add_argument("--length", type=int, required=True)
    p.add_argument("--layers", type=int, nargs="+")
    p.add_argument("--bucket-size", type=int)
    p.add_argument("--queries-per-bucket", type=int)
    p.add_argument("--without-factor", action="store_true", help="also run with the attention factor set to 1")
    p.set_defaults(func=cmd_eval_entropy)

    demo = sub.add_parser("demo", help="run the demo notebooks headless (make demo)")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--quick", action="store_true", help="tiny model and lengths (seconds, for testing)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, SpecError, ConfigError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
