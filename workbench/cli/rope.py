"""``workbench rope show|export``, ``workbench doctor`` and ``workbench architectures``: a RoPE setting read,
explained, exported, and checked on every architecture."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..doctor import doctor
from ..hf import NotExpressibleError, export_config, load_config_dict
from ..rope.diagnostics import format_pair_table, pair_diagnostics
from .args import POSITIVE, CliError, add_spec_args, geometry_source, spec_from_args


def cmd_rope_show(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    diag = pair_diagnostics(spec, args.length)
    if args.json:
        print(json.dumps({"spec": spec.to_dict(), "pairs": diag.rows(), "attention_factor": diag.attention_factor,
                          "critical_dim": diag.critical_dim}, indent=1))
    else:
        print(spec.describe())
        source = geometry_source(args)
        if source is not None:
            from ..doctor import rotary_layout

            print(rotary_layout(source))
        print(format_pair_table(diag, every=args.every))
    return 0


def cmd_rope_export(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    source = geometry_source(args)
    base = load_config_dict(source) if source is not None else {}
    try:
        full, notes = export_config(spec, base, args.layout, allow_lossy=args.allow_lossy)
    except NotExpressibleError as e:
        raise CliError(str(e)) from None
    text = json.dumps(full, indent=2, default=str)
    if args.save_model:
        save_model(args, full)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out} ({spec.describe()})")
    else:
        print(text)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    return 0


def save_model(args: argparse.Namespace, full: dict[str, Any]) -> None:
    """Write weights + tokenizer + the exported config: a folder stock transformers loads as is."""
    from ..hf import hf_config_from_dict
    from ..models import load_model

    if not args.model:
        raise CliError("--save-model needs --model (the weights to save)")
    lm = load_model(args.model)
    lm.model.config = hf_config_from_dict(full)
    lm.model.save_pretrained(args.save_model)
    lm.tokenizer.save_pretrained(args.save_model)
    print(f"saved {args.model} with {full['rope_parameters']['rope_type'] if 'rope_parameters' in full else 'rope_scaling'} "
          f"RoPE to {args.save_model}; load it with AutoModelForCausalLM.from_pretrained({args.save_model!r})")


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..models import load_model_config

    report = doctor(load_model_config(args.config))  # a model name, folder or config file: the config only
    print(json.dumps(report.to_dict(), indent=1) if args.json else report)
    return 0 if report.ok else 1


def cmd_architectures(args: argparse.Namespace) -> int:
    from ..architectures import check_architectures, markdown, to_json

    result = check_architectures(args.model_type or None)
    if args.json:
        Path(args.json).write_text(to_json(result))
    text = markdown(result)
    if args.markdown:
        Path(args.markdown).write_text(text)
    print(text, end="")
    failures = [c for cases in result["built"].values() for c in cases if not c.ok]
    for c in failures:
        print(f"FAILURE {c.model_type} {c.method}: {c.status} {c.detail}", file=sys.stderr)
    return 1 if failures else 0


def add_parsers(sub: Any) -> None:
    """rope show / rope export, doctor, architectures."""
    rope = sub.add_parser("rope", help="inspect and export RoPE settings").add_subparsers(dest="rope_cmd", required=True)
    show = rope.add_parser("show", help="per-pair diagnostics of a method")
    add_spec_args(show)
    show.add_argument("--length", type=POSITIVE, help="evaluate at this sequence length (default: target)")
    show.add_argument("--every", type=POSITIVE, default=1, help="show every k-th pair")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_rope_show)
    export = rope.add_parser("export", help="write a transformers config with the method")
    add_spec_args(export)
    export.add_argument("--layout", choices=["v5", "v4"], default="v5", help="rope_parameters (v5) or rope_scaling (v4)")
    export.add_argument("--allow-lossy", action="store_true", help="drop what stock transformers cannot express")
    export.add_argument("--out", help="output config.json (default: print)")
    export.add_argument("--save-model", metavar="DIR", help="also save --model's weights and tokenizer with this config")
    export.set_defaults(func=cmd_rope_export)


def add_doctor_parsers(sub: Any) -> None:
    """doctor and architectures (after export in the help's list)."""
    doc = sub.add_parser("doctor", help="explain a model config's RoPE setting and flag inconsistencies")
    doc.add_argument("config", help="config.json, a model folder, or smollm2")
    doc.add_argument("--json", action="store_true")
    doc.set_defaults(func=cmd_doctor)
    ar = sub.add_parser("architectures", help="check every RoPE architecture of the installed transformers on tiny "
                                              "random models: patched and exported exactly, or refused with why")
    ar.add_argument("model_type", nargs="*", help="only these model types (default: every causal LM)")
    ar.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    ar.add_argument("--json", metavar="FILE", help="also write every case to FILE")
    ar.set_defaults(func=cmd_architectures)
