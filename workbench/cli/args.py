"""What every command reads the same way: argument types, shared argument groups, and the checks made once.

Every check here runs before a model is loaded or a run folder is written, and fails with one line that names the
option and what is allowed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from ..hf import model_geometry
from ..rope import available_methods, get_method, make_spec


class CliError(Exception):
    """A user error worth one line, not a traceback."""


def int_at_least(low: int, what: str = "") -> Any:
    """An argparse type: an integer >= ``low``; the error names the value and what is allowed."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: an integer >= {low}{what}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: an integer >= {low}{what}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


POSITIVE = int_at_least(1)
NON_NEGATIVE = int_at_least(0)
LENGTH = int_at_least(2)


def thread_count(text: str) -> int:
    """An argparse type: torch threads, 1 to four per CPU of this machine (each thread is a real one)."""
    most = 4 * (os.cpu_count() or 1)
    value = POSITIVE(text)
    if value > most:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: at most {most} (4 per CPU; this machine has "
                                         f"{os.cpu_count()})")
    return value


def finite_float(low: float, strict: bool = True, what: str = "") -> Any:
    """An argparse type: a finite number > ``low`` (>= when not strict)."""
    allowed = f"a finite number {'>' if strict else '>='} {low:g}{what}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: {allowed}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"{text} is not allowed: {allowed}")
        return value

    parse.__name__ = allowed
    return parse


def max_factor(text: str) -> str | float:
    """--max-factor: '1+s', '1.25s', '2s' or a finite number >= 1."""
    if text in ("1+s", "1.25s", "2s"):
        return text
    return finite_float(1.0, strict=False, what=", '1+s', '1.25s' or '2s'")(text)


def rungs(text: str) -> tuple[int, ...]:
    """``--rungs 8192,16384``: prefix lengths in tokens."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of token counts "
                                         "(e.g. 8192,16384)") from None


def json_flag(flag: str, text: str, allowed: set[str] | None = None) -> dict[str, Any]:
    """A JSON object given on the command line; errors name the flag (and the keys it accepts)."""
    example = """'{"steps": 60, "lr": 0.001}'""" if flag == "--train" else """'{"generations": 4}'"""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"{flag} {text!r} is not JSON: {e.msg} at column {e.colno}; give an object such as "
                       f"{example}") from None
    if not isinstance(value, dict):
        raise CliError(f"{flag} {text!r} is not allowed: a JSON object of overrides such as {example}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise CliError(f"{flag}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return value


def parse_value(text: str) -> Any:
    """A parameter's value: ``@file.json`` (a factor list), JSON, or the text itself."""
    if text.startswith("@"):
        return load_factors(text[1:])
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def read_json(path: Path, what: str) -> Any:
    """A JSON file's content, or one line saying that ``what`` is missing or not JSON."""
    if not path.is_file():
        raise CliError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CliError(f"{what} {str(path)!r} is not JSON: {e.msg}") from None


def load_factors(path: str) -> list[float]:
    """A factor list from a JSON file: a bare list, {"long_factor": [...]}, a search's result.json, a factor set
    (workbench/assets/factors/*.json: its spec) or an exported config."""
    data = read_json(Path(path), "factor file")
    for key in ("long_factor", "factors", "best_factors"):
        if isinstance(data, dict) and key in data:
            return data[key]
    for key in ("spec", "rope_parameters"):
        if isinstance(data, dict) and isinstance(data.get(key), dict) and "long_factor" in data[key]:
            return data[key]["long_factor"]
    if isinstance(data, list):
        return data
    raise CliError(f"no factor list found in {path!r}")


# ---- the RoPE setting: --method and its geometry ----

def add_spec_args(p: argparse.ArgumentParser, method_required: bool = True) -> None:
    """--method, its geometry source (--model/--config or the three numbers), its length and its parameters."""
    p.add_argument("--method", required=method_required, choices=available_methods(),
                   help=None if method_required else "RoPE method to apply (default: the model as loaded)")
    p.add_argument("--model", help="smollm2, tiny-random, or a local model folder (geometry source)")
    p.add_argument("--config", help="a config.json (geometry source)")
    p.add_argument("--head-dim", type=LENGTH)
    p.add_argument("--rope-theta", type=finite_float(1.0))
    p.add_argument("--original-max-position-embeddings", "--original", dest="original", type=LENGTH,
                   help="L0, the length the model was trained at")
    p.add_argument("--target", type=POSITIVE, help="target length L")
    p.add_argument("--factor", type=finite_float(1.0, strict=False), help="extension ratio s (instead of --target)")
    p.add_argument("--factors", help="JSON file with the per-pair long_factor (LongRoPE)")
    p.add_argument("--n-hat", type=NON_NEGATIVE, help="LongRoPE start-token window")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="method parameter, value as JSON (or @file.json), e.g. beta_fast=16")


def geometry_source(args: argparse.Namespace) -> Any:
    """What --config or --model names (the config alone: no weights loaded or converted), or None."""
    if args.config:
        return args.config
    if args.model:
        from ..models import load_model_config

        return load_model_config(args.model)
    return None


def needs_factors(args: argparse.Namespace) -> bool:
    """The method takes a per-pair ``long_factor`` (the registry says so) and none was given."""
    if not args.method or args.method not in available_methods() or args.factors:
        return False
    return ("long_factor" in get_method(args.method).spec_cls.required_params()
            and not any(p.startswith("long_factor=") for p in args.param or []))


def check_method(args: argparse.Namespace, *, factors_hint: str = "") -> None:
    """A --method has its length (--target or --factor) and, when it takes one, its --factors."""
    if args.method and args.target is None and args.factor is None:
        raise CliError("--method needs --target (or --factor): the length the method extends to")
    if needs_factors(args):
        raise CliError(f"--method {args.method} needs --factors FILE (the per-pair long_factor{factors_hint})")


def refuse_config(args: argparse.Namespace, command: str, reason: str) -> None:
    """Commands that load --model take its geometry from the model's own config: --config is refused by name."""
    if getattr(args, "config", None):
        raise CliError(f"--config {args.config!r} is not allowed with {command}: {reason}")


def spec_from_args(args: argparse.Namespace, model: Any = None):
    """The spec the --method options describe, its geometry from ``model`` (when given), --config/--model, or the
    three numbers; explicit numbers win."""
    if model is not None:
        refuse_config(args, f"--model {args.model!r} here", "the geometry comes from the loaded model's own config; "
                      "drop --config (or pass the model folder as --model)")
    params: dict[str, Any] = {}
    for item in args.param or []:
        if "=" not in item:
            raise CliError(f"--param {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        params[k.strip()] = parse_value(v)
    if args.factors:
        params["long_factor"] = load_factors(args.factors)
    if args.n_hat is not None:
        params["n_hat"] = args.n_hat
    source = model if model is not None else geometry_source(args)
    geom: dict[str, Any] = {}
    if source is not None:
        g = model_geometry(source)
        geom = dict(head_dim=g.head_dim, rope_theta=g.rope_theta,
                    original_max_position_embeddings=g.original_max_position_embeddings)
    for key, attr in (("head_dim", "head_dim"), ("rope_theta", "rope_theta"),
                      ("original_max_position_embeddings", "original")):
        if getattr(args, attr) is not None:
            geom[key] = getattr(args, attr)
    missing = {"head_dim", "rope_theta", "original_max_position_embeddings"} - set(geom)
    if missing:
        raise CliError("give --model/--config or all of --head-dim, --rope-theta, --original-max-position-embeddings "
                       f"(missing {sorted(missing)})")
    return make_spec(args.method, **geom, target_length=args.target, factor=args.factor, **params)


# ---- long jobs: threads, --force, run folders ----

def add_force(p: argparse.ArgumentParser) -> None:
    """--force: start although the estimate says the job will not fit."""
    p.add_argument("--force", action="store_true",
                   help="start even when the estimated peak memory exceeds what this machine has available")


def add_threads(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """--threads: torch threads per process (applied by :func:`set_threads`)."""
    p.add_argument("--threads", type=thread_count, help=help)


def set_threads(args: argparse.Namespace) -> None:
    """Apply --threads to torch, when given."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def add_run_dir(p: argparse.ArgumentParser, help: str | None = None, *, resume: str | None = None) -> None:
    """--run-dir; a resumable job (``resume``: the help of its --resume) requires it."""
    p.add_argument("--run-dir", required=resume is not None, help=help)
    if resume is not None:
        p.add_argument("--resume", action="store_true", help=resume or None)


def check_resume(args: argparse.Namespace, job: str) -> None:
    """The one run-folder policy of resumable jobs: --resume needs a folder this kind of job wrote (its
    params.json); without --resume a new job starts there."""
    if not args.resume or (Path(args.run_dir) / "params.json").is_file():
        return
    where = ("it does not exist" if not Path(args.run_dir).exists()
             else f"it holds no {job} (no params.json)")
    raise CliError(f"--resume --run-dir {args.run_dir!r}: {where}; check the path, or drop --resume to start a new "
                   f"{job} there")


# ---- path options, checked before any work starts ----

PATH_OPTIONS = {  # option -> what it names: a folder the command writes in, or a file it writes
    "run_dir": "folder", "out": "file", "markdown": "file", "json": "file",  # (a --json flag is not a path)
}


def writable_path(option: str, value: str, kind: str) -> None:
    """Refuse, naming the option, a path the command could not write: a file where a folder is wanted (or the
    reverse), or a path beneath a file."""
    path = Path(value)
    if path.exists() and kind == "folder" and not path.is_dir():
        raise CliError(f"{option} {value!r} is a file, not a folder: give a folder path (it is made if missing)")
    if path.exists() and kind == "file" and path.is_dir():
        raise CliError(f"{option} {value!r} is a folder: give the path of the file to write")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CliError(f"{option} {value!r} lies beneath {str(parent)!r}, which is a file: nothing can be "
                               "written there; give a path in a folder")
            break


def check_paths(args: argparse.Namespace) -> None:
    """The path options and the cache folder, checked before any work starts."""
    from ..cache import CACHE_ENV

    kinds = dict(PATH_OPTIONS, **getattr(args, "path_kinds", {}))
    for dest, kind in kinds.items():
        value = getattr(args, dest, None)
        if isinstance(value, str) and value:
            writable_path("--" + dest.replace("_", "-"), value, kind)
    cache = os.environ.get(CACHE_ENV)
    if cache:
        try:
            writable_path(CACHE_ENV, cache, "folder")
        except CliError as e:
            raise CliError(f"{e} (the workbench's cache; unset it to use ~/.cache/longrope-workbench)") from None
