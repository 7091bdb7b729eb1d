"""Command line: ``workbench ...`` or ``python -m workbench ...``.

    workbench rope show --model smollm2 --method yarn --target 16384
    workbench rope export --model smollm2 --method longrope --target 16384 --factors f.json --out config.json
    workbench doctor path/to/config.json
    workbench export gguf --model smollm2 --method longrope --target 16384 --factors f.json --out long.gguf
    workbench eval ppl --engine llama.cpp --model long.gguf --lengths 16384
    workbench demo --out runs/demo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .doctor import doctor
from .events import ConsoleSink
from .hf import (
    ConfigError,
    NotExpressibleError,
    export_config,
    load_config_dict,
    model_geometry,
)
from .rope import SpecError, available_methods, get_method, make_spec
from .rope.diagnostics import format_pair_table, pair_diagnostics
from .search.config import PRESETS as SEARCH_PRESETS


class CliError(Exception):
    """A user error worth one line, not a traceback."""


def _int_at_least(low: int, what: str = "") -> Any:
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


def _threads(text: str) -> int:
    """An argparse type: torch threads, 1 to four per CPU of this machine (each thread is a real one)."""
    most = 4 * (os.cpu_count() or 1)
    value = _int_at_least(1)(text)
    if value > most:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: at most {most} (4 per CPU; this machine has "
                                         f"{os.cpu_count()})")
    return value


def _finite_float(low: float, strict: bool = True, what: str = "") -> Any:
    """An argparse type: a finite number > ``low`` (>= when not strict)."""
    allowed = f"a finite number {'>' if strict else '>='} {low:g}{what}"

    def parse(text: str) -> float:
        import math

        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: {allowed}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"{text} is not allowed: {allowed}")
        return value

    parse.__name__ = allowed
    return parse


def _max_factor(text: str) -> str | float:
    """--max-factor: '1+s', '1.25s', '2s' or a finite number >= 1."""
    if text in ("1+s", "1.25s", "2s"):
        return text
    return _finite_float(1.0, strict=False, what=", '1+s', '1.25s' or '2s'")(text)


def _json_flag(flag: str, text: str, allowed: set[str] | None = None) -> dict[str, Any]:
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


POSITIVE = _int_at_least(1)
NON_NEGATIVE = _int_at_least(0)


def _parse_value(text: str) -> Any:
    if text.startswith("@"):
        return _load_factors(text[1:])
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _read_json(path: Path, what: str) -> Any:
    """A JSON file's content, or one line saying that ``what`` is missing or not JSON."""
    if not path.is_file():
        raise CliError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CliError(f"{what} {str(path)!r} is not JSON: {e.msg}") from None


def _load_factors(path: str) -> list[float]:
    """A factor list from a JSON file: a bare list, {"long_factor": [...]}, or an exported config."""
    data = _read_json(Path(path), "factor file")
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
        from .models import load_model_config

        return load_model_config(args.model)  # the config alone: no weights loaded or converted
    return None


def _spec_from_args(args: argparse.Namespace, model: Any = None):
    if model is not None and getattr(args, "config", None):
        raise CliError(f"--config {args.config!r} is not allowed with --model {args.model!r} here: the geometry comes "
                       "from the loaded model's own config; drop --config (or pass the model folder as --model)")
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
        raise CliError("give --model/--config or all of --head-dim, --rope-theta, --original-max-position-embeddings "
                       f"(missing {sorted(missing)})")
    return make_spec(args.method, **geom, target_length=args.target, factor=args.factor, **params)


def _add_spec_args(p: argparse.ArgumentParser, method_required: bool = True) -> None:
    p.add_argument("--method", required=method_required, choices=available_methods(),
                   help=None if method_required else "RoPE method to apply (default: the model as loaded)")
    p.add_argument("--model", help="smollm2, tiny-random, or a local model folder (geometry source)")
    p.add_argument("--config", help="a config.json (geometry source)")
    p.add_argument("--head-dim", type=_int_at_least(2))
    p.add_argument("--rope-theta", type=_finite_float(1.0))
    p.add_argument("--original-max-position-embeddings", "--original", dest="original", type=_int_at_least(2),
                   help="L0, the length the model was trained at")
    p.add_argument("--target", type=POSITIVE, help="target length L")
    p.add_argument("--factor", type=_finite_float(1.0, strict=False), help="extension ratio s (instead of --target)")
    p.add_argument("--factors", help="JSON file with the per-pair long_factor (LongRoPE)")
    p.add_argument("--n-hat", type=NON_NEGATIVE, help="LongRoPE start-token window")
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
        source = _geometry_source(args)
        if source is not None:
            from .doctor import rotary_layout

            print(rotary_layout(source))
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
    from .models import load_model_config

    report = doctor(load_model_config(args.config))  # a model name, folder or config file: the config only
    print(json.dumps(report.to_dict(), indent=1) if args.json else report)
    return 0 if report.ok else 1


def _eval_setup(args: argparse.Namespace, forwards: list[tuple[int, int]] | None = None, job: str = "eval",
                remedy: str = "ask for shorter --lengths, or fewer at once"):
    """The model, the spec, the label and the estimate; every argument is checked here, and the job's memory, before
    the model is loaded or the run folder written."""
    from .models import load_model

    if args.config:
        raise CliError(f"--config {args.config!r} is not allowed with eval: it reads --model {args.model!r} with the "
                       "model's own config; pass the model folder as --model (and --method for a RoPE setting)")
    if args.method and args.target is None and args.factor is None:
        raise CliError("--method needs --target (or --factor): the length the method extends to")
    if _needs_factors(args):
        raise CliError(f"--method {args.method} needs --factors FILE (the per-pair long_factor, e.g. a search run's "
                       "result.json or workbench/assets/factors/*.json)")
    est = _preflight(args, job, forwards or [], dtype=getattr(args, "dtype", "fp32"),
                     remedy=remedy) if forwards else None
    lm = load_model(args.model)
    spec = _spec_from_args(args, lm.model) if args.method else None
    label = args.label or (spec.method if spec is not None else "no scaling")
    return lm, spec, label, _announce(est, lm.model)


class _LazyRun:
    """An eval's run folder, written at its first event or result: after the library's own up-front checks."""

    def __init__(self, args: argparse.Namespace, spec: Any) -> None:
        self.args, self.spec, self._folder = args, spec, None

    def _get(self) -> Any:
        from .runs import RunFolder

        if self._folder is None:
            params = {k: v for k, v in vars(self.args).items() if k != "func"}
            self._folder = RunFolder(self.args.run_dir, params, self.spec)
        return self._folder

    def sink(self, event: Any) -> None:
        self._get().sink(event)

    def write(self, name: str, data: Any) -> Path:
        return self._get().write(name, data)


def _run_folder(args: argparse.Namespace, spec: Any) -> Any:
    """The run folder of an eval command, written only once every argument has been checked."""
    return _LazyRun(args, spec) if args.run_dir else None


def _check_documents(docs: list, asked: int, args: argparse.Namespace, length: int) -> None:
    if len(docs) < asked:
        raise CliError(f"--n-documents {asked} is not allowed here: the {args.split} split of {args.corpus!r} gives "
                       f"only {len(docs)} samples of {length} tokens; ask for at most {len(docs)}")


def _sinks(run: Any, estimate: Any = None) -> Any:
    """The run folder's sink and the console's progress lines (with the time left when the estimate counts the
    forwards)."""
    from .events import fan_out

    console = ConsoleSink(forwards=estimate.count if estimate is not None else None)
    return fan_out([run.sink if run else None, console])


def _preflight(args: argparse.Namespace, job: str, forwards: list[tuple[int, int]], *, engine: str = "window",
               dtype: str = "fp32", batch: int = 1, chunk: int = 4096, remedy: str = "") -> Any:
    """The job's estimate from the model's config alone; refused here, before any weight is loaded, when its peak
    memory exceeds what the machine has (unless --force)."""
    from .estimate import Estimate, Shape, TooLarge, check_fits
    from .evaluate import resolve_dtype
    from .models import load_model_config

    try:
        cfg = load_model_config(args.model)
    except ValueError:
        return None  # loading the model says what is wrong with it
    try:
        shape = Shape.from_config(cfg)
    except ValueError as e:
        print(f"no estimate: {e}", flush=True)
        return None
    est = Estimate(job, shape, resolve_dtype(dtype), engine, tuple((L, n) for L, n in forwards if n), batch, chunk)
    if not est.forwards:
        return None
    try:
        check_fits(est, force=getattr(args, "force", False), remedy=remedy)
    except TooLarge as e:
        raise CliError(str(e)) from None
    return est


def _announce(est: Any, model: Any) -> Any:
    """Measure (or read the cached) rates of this machine for the model, print the estimate's line."""
    if est is None:
        return None
    from .estimate import calibrate

    est = est.with_rates(calibrate(model, est.dtype))
    print(est.line(), flush=True)
    return est


def _gguf_source(model: str | None) -> Path:
    """The GGUF behind --model: the wheel's SmolLM2 for "smollm2", else a .gguf path."""
    if model == "smollm2":
        from .models import smollm2_gguf_path

        return smollm2_gguf_path()
    if not model or not model.endswith(".gguf"):
        raise CliError(f"--model {model!r}: the llama.cpp side needs a GGUF: --model smollm2 (the wheel's Q4_1 "
                       "GGUF) or --model path/to/model.gguf")
    p = Path(model)
    if not p.is_file():
        raise CliError(f"--model {model!r} does not exist")
    return p


def _spec_for_gguf(args: argparse.Namespace, source: Path):
    """A spec from the --method options with the GGUF's geometry (rope dims, freq_base, L0)."""
    from .gguf import read_gguf

    info = read_gguf(source)
    ns = argparse.Namespace(**vars(args))
    ns.model, ns.config = None, None
    ns.head_dim = args.head_dim or info.rope_dimension_count
    ns.rope_theta = args.rope_theta or info.rope_theta
    ns.original = args.original or info.original_max_position_embeddings
    return _spec_from_args(ns)


def _spec_from_run(run_dir: str):
    """The best spec of a search run folder (its result.json)."""
    from .rope import spec_from_dict

    path = Path(run_dir) / "result.json"
    if not path.is_file():
        raise CliError(f"{run_dir!r} has no result.json: not a finished search run folder")
    data = _read_json(path, "search result")
    if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
        raise CliError(f"{path} has no best spec (did the search evaluate anything?)")
    return spec_from_dict(data["spec"])


def cmd_export_gguf(args: argparse.Namespace) -> int:
    from .gguf import export_gguf

    source = _gguf_source(args.model)
    if args.from_run:
        spec = _spec_from_run(args.from_run)
    elif args.method:
        if args.target is None and args.factor is None:
            raise CliError("--method needs --target (or --factor): the length the method extends to")
        spec = _spec_for_gguf(args, source)
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


def _eval_ppl_llamacpp(args: argparse.Namespace) -> int:
    import tempfile

    from . import llamacpp
    from .data import samples
    from .gguf import export_gguf, gguf_spec
    from .runs import RunFolder

    llamacpp.llama_cpp_module()  # one clear line when llama-cpp-python is missing
    if args.mode != "truncated":
        raise CliError("--engine llama.cpp evaluates truncated windows only (--mode truncated)")
    if args.dtype != "fp32":
        raise CliError("--dtype applies to the transformers engine; llama.cpp runs the GGUF's own weight types")
    source = _gguf_source(args.model)
    with tempfile.TemporaryDirectory(prefix="workbench-gguf-") as tmp:
        if args.method:
            if args.target is None and args.factor is None:
                raise CliError("--method needs --target (or --factor): the length the method extends to")
            spec = _spec_for_gguf(args, source)
            path = export_gguf(spec, source, Path(tmp) / f"{spec.method}.gguf").path
        else:
            spec, path = gguf_spec(source), source
        label = args.label or (spec.method if spec is not None else "no scaling")
        tokenizer = llamacpp.gguf_tokenizer(path)
        docs = samples(tokenizer, args.corpus, args.split, max(args.lengths), args.n_documents,
                       per_document=args.per_document)
        params = {k: v for k, v in vars(args).items() if k != "func"}
        run = RunFolder(args.run_dir, params, spec) if args.run_dir else None  # after every check above
        return _ppl_rows(lambda L: llamacpp.perplexity(path, docs, label=label, length=L, kv_type=args.kv_type,
                                                       sink=_sinks(run)), args.lengths, label, run, " [llama.cpp]")


def _ppl_rows(evaluate: Any, lengths: list[int], label: str, run: Any, engine: str = "") -> int:
    """Evaluate each length (a non-finite perplexity is an error), print a line each, write ppl.json if asked."""
    from .evaluate import check_finite

    results = []
    for L in sorted(lengths):
        r = check_finite(evaluate(L))
        results.append(r)
        print(f"{label} @ {L}{engine}: PPL {r.ppl:.3f} (last quarter {r.tail_ppl():.3f}; {r.n_documents} documents, "
              f"{r.seconds:.1f} s)")
    if run:
        print(f"wrote {run.write('ppl', results)}")
    return 0


def cmd_eval_ppl(args: argparse.Namespace) -> int:
    from .data import samples
    from .evaluate import perplexity

    if args.engine == "llama.cpp":
        return _eval_ppl_llamacpp(args)
    if args.model and args.model.endswith(".gguf"):
        raise CliError(f"--model {args.model!r} is a GGUF: evaluate it with --engine llama.cpp (the transformers "
                       "engine loads smollm2, teaching, tiny-random or a model folder)")
    if args.mode == "sliding" and args.stride > min(args.lengths):
        raise CliError(f"--stride {args.stride} is not allowed with --lengths {min(args.lengths)}: the window moves "
                       f"by at most its own length (give --stride <= {min(args.lengths)})")
    per_length = args.n_documents * (args.per_document if args.mode == "truncated" else 1)
    forwards = [(L, per_length if args.mode == "truncated" else per_length * (L // args.stride + 1))
                for L in sorted(args.lengths)]
    lm, spec, label, est = _eval_setup(args, forwards, "eval ppl")
    longest = max(args.lengths) if args.mode == "truncated" else max(args.lengths) * 2
    docs = samples(lm.tokenizer, args.corpus, args.split, longest, args.n_documents, per_document=args.per_document)
    _check_documents(docs, args.n_documents, args, longest)
    run = _run_folder(args, spec)
    sink = _sinks(run, est)
    return _ppl_rows(lambda L: perplexity(lm.model, docs, spec=spec, label=label, length=L, mode=args.mode,
                                          stride=args.stride, dtype=args.dtype, progress=False, sink=sink),
                     args.lengths, label, run)


def cmd_eval_passkey(args: argparse.Namespace) -> int:
    from .evaluate import passkey_accuracy

    lm, spec, label, est = _eval_setup(args, [(L, args.trials) for L in sorted(args.lengths)], "eval passkey")
    run = _run_folder(args, spec)
    r = passkey_accuracy(lm.model, lm.tokenizer, sorted(args.lengths), n_trials=args.trials, spec=spec, label=label,
                         seed=args.seed, progress=False, sink=_sinks(run, est))
    for L, acc in zip(r.lengths, r.accuracy, strict=True):
        print(f"{label} passkey @ {L}: {acc:.0%} of {args.trials}")
    if run:
        print(f"wrote {run.write('passkey', r)}")
    return 0


def cmd_eval_needle(args: argparse.Namespace) -> int:
    from .data import needle_samples
    from .evaluate import check_finite, needle_grid, needle_perplexity

    bad = [d for d in args.depths if not 0 <= d <= 1]
    if bad:
        raise CliError(f"--depths {bad} is not allowed: fractions of the document in [0, 1]")

    per_length = args.n_documents if args.ppl else 2 * len(args.depths) * args.trials  # grid: answer + its NLL
    lm, spec, label, est = _eval_setup(args, [(L, per_length) for L in sorted(args.lengths)],
                                       "eval needle" + (" --ppl" if args.ppl else ""))
    if args.ppl:
        out = []
        by_length = {L: needle_samples(lm.tokenizer, args.corpus, args.split, L, args.n_documents, args.needles,
                                       args.seed) for L in sorted(args.lengths)}
        run = _run_folder(args, spec)
        sink = _sinks(run, est)  # one console for every length: its time left counts all of them
        for L, docs in by_length.items():
            r = check_finite(needle_perplexity(lm.model, docs, spec=spec, label=label, dtype=args.dtype,
                                               progress=False, sink=sink))
            out.append(r)
            print(f"{label} needle-driven PPL @ {L}: {r.ppl:.3f} ({r.n_documents} documents, answer tokens only)")
        if run:
            print(f"wrote {run.write('needle_ppl', out)}")
        return 0
    run = _run_folder(args, spec)
    r = needle_grid(lm.model, lm.tokenizer, args.depths, sorted(args.lengths), n_trials=args.trials, source=args.corpus,
                    split=args.split, spec=spec, label=label, seed=args.seed, progress=False, sink=_sinks(run, est))
    print(f"{label} needle accuracy (rows: depth, columns: {r.lengths}):")
    for d, row in zip(r.depths, r.accuracy, strict=True):
        print(f"  {d:5.2f}  " + "  ".join(f"{x:4.0%}" for x in row))
    if run:
        print(f"wrote {run.write('needle_grid', r)}")
    return 0


def cmd_eval_entropy(args: argparse.Namespace) -> int:
    from .data import samples
    from .entropy import attention_entropy, without_attention_factor

    runs = 2 if args.without_factor and args.method else 1
    lm, spec, label, est = _eval_setup(args, [(args.length, runs)], "eval entropy", "ask for a shorter --length")
    doc = samples(lm.tokenizer, args.corpus, args.split, args.length, 1)[0]
    run = _run_folder(args, spec)
    settings = [(label, spec)]
    if args.without_factor and spec is not None:
        settings.append((f"{label} without attention factor", without_attention_factor(spec)))
    out = []
    sink = _sinks(run, est)
    for lab, sp in settings:
        r = attention_entropy(lm.model, doc.tokens, spec=sp, label=lab, layers=args.layers,
                              bucket_size=args.bucket_size, queries_per_bucket=args.queries_per_bucket,
                              sink=sink)
        out.append(r)
        pos = r.by_position()
        print(f"{lab} @ {r.length}: mean entropy {sum(pos) / len(pos):.3f} nats (first bucket {pos[0]:.3f}, "
              f"last {pos[-1]:.3f}; uniform would be {r.uniform_reference()[-1]:.3f}), {r.seconds:.1f} s")
    if run:
        print(f"wrote {run.write('entropy', out)}")
    return 0


def cmd_teaching(args: argparse.Namespace) -> int:
    """Train (or load) a teaching model; report its training and how it reads beyond L0 without scaling."""
    from .models import load_teaching
    from .plots import save_training_curve
    from .runs import RunFolder
    from .teaching import read_beyond_L0, training_info

    lm = load_teaching(args.preset)
    info = training_info(args.preset)
    L0 = info["config"]["original_max_position_embeddings"]
    print(f"teaching model {args.preset}: {info['parameters'] / 1e6:.2f}M parameters, {info['train_tokens_seen']} "
          f"training tokens in {info['seconds']:.0f} s ({info['tokens_per_second']:.0f} tokens/s); held-out PPL at "
          f"L0 = {L0}: {info['heldout_ppl_at_L0']:.2f}")
    run = RunFolder(args.out, {"preset": args.preset, "multiples": args.multiples}) if args.out else None
    longest = L0 * max(args.multiples)
    rows = read_beyond_L0(lm.model, lm.tokenizer, L0, longest, args.n_documents)
    for source, row in rows.items():
        print(f"{source:>12}: PPL per {L0}-token window of a {longest}-token read (no scaling): "
              f"{row['ppl_per_L0_window']}")
    if run:
        run.write("teaching", {"training": {k: v for k, v in info.items() if k != "history"}, "beyond_L0": rows})
        path = save_training_curve(info["history"], run.path / "training_curve.png",
                                   f"Teaching model ({args.preset}) training")
        print(f"wrote {run.path / 'teaching.json'} and {path}")
    return 0


def _distributed() -> Any:
    """Under accelerate launch / torchrun: an Accelerator (it initialises the process group), else None."""
    from . import distributed

    if not distributed.launched():
        return None
    import torch
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def cmd_search(args: argparse.Namespace) -> int:
    import torch

    from . import distributed
    from .models import load_model
    from .search import SearchConfig, run_search

    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator = _distributed()
    params: dict[str, Any] = dict(SEARCH_PRESETS[args.preset])
    for name in ("population", "parents", "mutants", "crossovers", "generations", "critical_dim",
                 "critical_dim_span", "seed"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    if args.max_factor is not None:
        params["max_factor"] = args.max_factor
    if args.factors:
        params["user_seeds"] = tuple(tuple(_load_factors(f)) for f in args.factors)
    for name in ("dtype", "chunk_tokens", "rungs", "rung_keep", "per_document"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    config = SearchConfig(target_length=args.target_length, mode=args.mode, corpus=args.corpus,
                          n_documents=args.documents, racing="off" if args.no_racing else args.racing,
                          n_hat_stage=not args.no_n_hat,
                          **params)
    if args.resume and not (Path(args.run_dir) / "params.json").is_file():
        raise CliError(f"--resume --run-dir {args.run_dir!r}: "
                       + ("it does not exist" if not Path(args.run_dir).exists() else "it holds no search "
                          "(no params.json)") + "; check the path, or drop --resume to start a new search there")
    est = _preflight(args, "search", [(config.target_length, config.evaluations_budget * config.n_documents
                                       * config.per_document)], engine="stream", dtype=config.dtype,
                     chunk=config.chunk_tokens, remedy="give a smaller --chunk-tokens, --dtype bf16, or a shorter "
                                                       "--target-length")
    lm = load_model(args.model)
    if distributed.is_main():
        _announce(est, lm.model)
        print(f"search: {args.model}, {config.mode} to {config.target_length} tokens, budget "
              f"{config.evaluations_budget} evaluations on {config.n_documents} {config.corpus} documents, "
              f"racing {config.racing}"
              f"{f', {distributed.world_size()} processes' if accelerator else ''} -> {args.run_dir}", flush=True)

    result = run_search(lm.model, lm.tokenizer, config, args.run_dir, resume=args.resume, sink=ConsoleSink(),
                        model_name=args.model, report=not args.no_report, report_documents=args.report_documents)
    distributed.shutdown()
    if result is None:
        return 0
    print(f"best PPL {result.best_fitness:.4f} (seeds, with the search's attention factor: "
          + ", ".join(f"{result.baseline_labels.get(k, k)} {v:.4f}" for k, v in result.baselines.items())
          + f"); n_hat {result.best_n_hat}; {result.evaluations} evaluations ({result.evaluations_replayed} from the "
          f"journal), {result.tokens_forwarded:,} token-forwards, {result.tokens_saved_by_racing:,} saved by "
          f"{result.racing} racing, {result.seconds:.0f} s" + (" — STOPPED" if result.stopped else ""))
    print("best factors: " + json.dumps([round(x, 2) for x in result.best_factors]))
    report = Path(args.run_dir) / "report.json"
    if report.exists():
        rep = json.loads(report.read_text())
        s = rep["settings"]
        n_docs = len(rep.get("source_documents", []))
        per_doc = (f" and on {rep['document_wins_vs_yarn'] * n_docs:.0f} of the {n_docs} held-out documents they "
                   "come from" if "document_wins_vs_yarn" in rep else "")
        print("held-out: " + ", ".join(f"{k} {v['ppl']:.3f}" for k, v in s.items()) + "; searched better than YaRN "
              f"on {rep['wins_vs_yarn'] * len(rep['documents']):.0f} of {len(rep['documents'])} windows{per_doc}")
    return 0


def _needs_factors(args: argparse.Namespace) -> bool:
    """The method takes a per-pair ``long_factor`` (the registry says so) and none was given."""
    if not args.method or args.method not in available_methods() or args.factors:
        return False
    return ("long_factor" in get_method(args.method).spec_cls.required_params()
            and not any(p.startswith("long_factor=") for p in args.param or []))


def cmd_finetune(args: argparse.Namespace) -> int:
    import torch

    from . import distributed
    from .models import load_model
    from .train import TrainConfig, finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(seq_len=args.seq_len, steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                      lr=args.lr, warmup=args.warmup, schedule=args.schedule, checkpoint_every=args.checkpoint_every,
                      mixed=args.mixed, dtype=args.dtype, gradient_checkpointing=args.gradient_checkpointing,
                      attn=args.attn, seed=args.seed, corpora=tuple(args.corpora))
    if args.resume and not (Path(args.run_dir) / "params.json").is_file():
        raise CliError(f"--resume --run-dir {args.run_dir!r}: "
                       + ("it does not exist" if not Path(args.run_dir).exists() else "it holds no fine-tune "
                          "(no params.json)") + "; check the path, or drop --resume to start a new fine-tune there")
    if _needs_factors(args):
        raise CliError(f"--method {args.method} needs --factors FILE (the per-pair long_factor)")
    if args.config:
        raise CliError(f"--config {args.config!r} is not allowed with finetune: the geometry comes from --model "
                       f"{args.model!r}'s own config")
    est = _preflight(args, "finetune", [(cfg.seq_len, cfg.steps * cfg.grad_accum)],
                     engine="train-checkpointed" if cfg.gradient_checkpointing else "train",
                     dtype="fp32" if cfg.dtype == "auto" else cfg.dtype, batch=cfg.batch_size,
                     remedy="give a smaller --batch-size (with --grad-accum to keep the batch), "
                            "--gradient-checkpointing, or a shorter --seq-len")
    lm = load_model(args.model)
    _announce(est, lm.model)
    spec = _spec_from_args(args, lm.model)
    # under accelerate launch, finetune's Accelerator joins the process group from the environment
    result = finetune(lm.model, lm.tokenizer, spec, cfg, args.run_dir, resume=args.resume, model_name=args.model,
                      progress=not args.quiet)
    distributed.shutdown()
    if result.final_dir and not result.history and result.resumed_from == cfg.steps:
        print(f"{args.run_dir} was already complete: {cfg.steps} of {cfg.steps} steps{_last_loss(args.run_dir)}; "
              f"nothing to do; the model is in {result.final_dir}")
    elif result.final_dir:
        last = result.history[-1] if result.history else {}
        print(f"fine-tuned {args.model} with {spec.method} for {result.steps} steps at {cfg.seq_len} tokens"
              f"{f' (resumed at step {result.resumed_from})' if result.resumed_from else ''}: last loss "
              f"{last.get('loss', float('nan')):.4f}; saved to {result.final_dir} (stock transformers loads it)")
    return 0


def _last_loss(run_dir: str) -> str:
    """"; last loss X" from a fine-tune folder's events (empty when none was recorded)."""
    from .events import read_events

    try:
        steps = [e.data for e in read_events(Path(run_dir) / "events.jsonl") if e.kind == "train.step"]
    except (OSError, ValueError):
        return ""
    return f"; last loss {steps[-1]['loss']:.4f}" if steps and "loss" in steps[-1] else ""


def cmd_progressive(args: argparse.Namespace) -> int:
    import torch

    from . import distributed
    from .progressive import STAGE_BUDGETS, ProgressiveConfig, run_progressive

    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = {name: _json_flag(f"--{name}", getattr(args, name)) for name in STAGE_BUDGETS if getattr(args, name)}
    cfg = ProgressiveConfig.with_overrides(args.stage1_length, args.stage2_length, corpus=args.corpus,
                                           eval_documents=args.eval_documents, seed=args.seed, **budgets)
    train = {"batch_size": 8, "steps": 1, **cfg.train}
    _preflight(args, "progressive (its fine-tune)", [(cfg.stage1_length, train["steps"])],
               engine="train-checkpointed" if train.get("gradient_checkpointing") else "train",
               batch=train["batch_size"], remedy="give --train '{\"batch_size\": 1}' or shorter stage lengths")
    _preflight(args, "progressive (its second search)", [(cfg.stage2_length, 1)], engine="stream",
               dtype=cfg.search2.get("dtype", "fp32"), remedy="give a shorter --stage2-length")

    result = run_progressive(args.model, cfg, args.run_dir, sink=ConsoleSink(train_every=20), progress=False)
    distributed.shutdown()
    if result is None:
        return 0
    r = result.report
    print("perplexity (held-out):")
    for label, row in r["ppl"].items():
        print(f"  {label:>15}: " + "  ".join(f"{L}: {v:8.2f}" for L, v in row.items()))
    print("at L0: " + ", ".join(f"{k} {v:.2f}" for k, v in r["ppl_at_L0"].items()))
    print(f"stage 2 at L2 / stage 1 at L1 = {r['stage2_at_L2_over_stage1_at_L1']:.3f} (target <= 1.2); recovery vs "
          f"original at L0 {r['recovery_vs_original_at_L0']:+.2%} (target: at most +2%); {result.seconds:.0f} s; final "
          f"model: {result.final_dir}")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from .launch import launch

    params: dict[str, Any] = {}
    for name, value in args.p or []:
        params[name] = _parse_value(value)
    output = args.out or str(Path("runs") / "launch" / Path(args.notebook).name)
    result = launch(args.notebook, params, output, processes=args.processes)
    return 0 if result.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), quick=args.quick, full=args.full)


def _add_rope_parser(sub: Any) -> None:
    """Add the rope show / rope export subcommands to ``sub``."""
    rope = sub.add_parser("rope", help="inspect and export RoPE settings").add_subparsers(dest="rope_cmd", required=True)
    show = rope.add_parser("show", help="per-pair diagnostics of a method")
    _add_spec_args(show)
    show.add_argument("--length", type=POSITIVE, help="evaluate at this sequence length (default: target)")
    show.add_argument("--every", type=POSITIVE, default=1, help="show every k-th pair")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_rope_show)
    export = rope.add_parser("export", help="write a transformers config with the method")
    _add_spec_args(export)
    export.add_argument("--layout", choices=["v5", "v4"], default="v5", help="rope_parameters (v5) or rope_scaling (v4)")
    export.add_argument("--allow-lossy", action="store_true", help="drop what stock transformers cannot express")
    export.add_argument("--out", help="output config.json (default: print)")
    export.add_argument("--save-model", metavar="DIR", help="also save --model's weights and tokenizer with this config")
    export.set_defaults(func=cmd_rope_export)


def _add_export_parser(sub: Any) -> None:
    """Add the export gguf subcommand to ``sub``."""
    exp = sub.add_parser("export", help="export a RoPE setting into a model file").add_subparsers(
        dest="export_cmd", required=True)
    eg = exp.add_parser("gguf", help="copy a GGUF with a RoPE method carried as llama.cpp applies it")
    _add_spec_args(eg, method_required=False)
    eg.set_defaults(model="smollm2")
    eg.add_argument("--from-run", metavar="DIR", help="take the best spec of a search run folder (result.json)")
    eg.add_argument("--out", required=True, help="output .gguf (never the source)")
    eg.set_defaults(func=cmd_export_gguf)


def _add_doctor_parser(sub: Any) -> None:
    """Add the doctor subcommand to ``sub``."""
    doc = sub.add_parser("doctor", help="explain a model config's RoPE setting and flag inconsistencies")
    doc.add_argument("config", help="config.json, a model folder, or smollm2")
    doc.add_argument("--json", action="store_true")
    doc.set_defaults(func=cmd_doctor)


def cmd_architectures(args: argparse.Namespace) -> int:
    from .architectures import check_architectures, markdown, to_json

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


def _add_architectures_parser(sub: Any) -> None:
    """Add the architectures subcommand to ``sub``."""
    ar = sub.add_parser("architectures", help="check every RoPE architecture of the installed transformers on tiny "
                                              "random models: patched and exported exactly, or refused with why")
    ar.add_argument("model_type", nargs="*", help="only these model types (default: every causal LM)")
    ar.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    ar.add_argument("--json", metavar="FILE", help="also write every case to FILE")
    ar.set_defaults(func=cmd_architectures)


def _add_eval_parser(sub: Any) -> None:
    """Add the eval ppl / passkey / needle / entropy subcommands to ``sub``."""
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
        p.add_argument("--seed", type=NON_NEGATIVE, default=0)
        _add_force(p)
        return p

    p = eval_parser("ppl", "perplexity and per-position loss")
    p.add_argument("--lengths", type=_int_at_least(2), nargs="+", required=True)
    p.add_argument("--n-documents", type=POSITIVE, default=4)
    p.add_argument("--per-document", type=POSITIVE, default=1, help="non-overlapping windows per document")
    p.add_argument("--mode", choices=["truncated", "sliding"], default="truncated")
    p.add_argument("--stride", type=POSITIVE, default=256)
    p.add_argument("--engine", choices=["transformers", "llama.cpp"], default="transformers",
                   help="llama.cpp: run a GGUF (--model smollm2 or a .gguf) through llama-cpp-python; with --method "
                        "the GGUF is exported with it first")
    p.add_argument("--kv-type", choices=["f16", "f32"], default="f16", help="llama.cpp's KV cache type")
    p.set_defaults(func=cmd_eval_ppl)
    p = eval_parser("passkey", "passkey retrieval accuracy by length")
    p.add_argument("--lengths", type=_int_at_least(2), nargs="+", required=True)
    p.add_argument("--trials", type=POSITIVE, default=5)
    p.set_defaults(func=cmd_eval_passkey)
    p = eval_parser("needle", "needle-in-a-haystack grid, or needle-driven perplexity with --ppl")
    p.add_argument("--lengths", type=_int_at_least(2), nargs="+", required=True)
    p.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--trials", type=POSITIVE, default=1)
    p.add_argument("--ppl", action="store_true", help="needle-driven perplexity (answer tokens only)")
    p.add_argument("--n-documents", type=POSITIVE, default=4)
    p.add_argument("--needles", type=POSITIVE, default=3, help="needle copies per document (with --ppl)")
    p.set_defaults(func=cmd_eval_needle)
    p = eval_parser("entropy", "attention entropy by layer, head and position")
    p.add_argument("--length", type=_int_at_least(2), required=True)
    p.add_argument("--layers", type=NON_NEGATIVE, nargs="+")
    p.add_argument("--bucket-size", type=POSITIVE)
    p.add_argument("--queries-per-bucket", type=POSITIVE)
    p.add_argument("--without-factor", action="store_true", help="also run with the attention factor set to 1")
    p.set_defaults(func=cmd_eval_entropy)


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="start even when the estimated peak memory exceeds what this machine has available")


def _rungs(text: str) -> tuple[int, ...]:
    """``--rungs 8192,16384``: prefix lengths in tokens."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of token counts "
                                         "(e.g. 8192,16384)") from None


def _add_search_parser(sub: Any) -> None:
    """Add the search subcommand to ``sub``."""
    sp = sub.add_parser("search", help="evolutionary search for LongRoPE / LongRoPE2 factors (resumable)")
    sp.add_argument("--model", default="teaching")
    sp.add_argument("--target-length", type=_int_at_least(2), required=True)
    sp.add_argument("--mode", choices=["longrope", "longrope2"], default="longrope")
    sp.add_argument("--run-dir", required=True)
    sp.add_argument("--resume", action="store_true", help="continue the search in --run-dir from its journal")
    sp.add_argument("--preset", choices=sorted(SEARCH_PRESETS), default="full",
                    help="full: the paper's budget; lean: a real model on a CPU (use with --rungs); small: minutes on a "
                         "CPU; tiny: seconds")
    for name in ("population", "parents", "mutants", "crossovers", "generations", "critical-dim",
                 "critical-dim-span", "seed"):
        sp.add_argument(f"--{name}", type=POSITIVE if name in ("population", "parents", "critical-dim") else NON_NEGATIVE)
    sp.add_argument("--max-factor", type=_max_factor,
                    help="'1+s' (LongRoPE's default), '1.25s', '2s' (LongRoPE2's default) or a number >= s")
    sp.add_argument("--factors", action="append",
                    help="JSON file with a factor list to seed the population with (repeat for several)")
    sp.add_argument("--documents", type=POSITIVE, default=3, help="fitness documents (train split)")
    sp.add_argument("--per-document", type=POSITIVE, help="windows taken from each long document (default 2)")
    sp.add_argument("--dtype", choices=["fp32", "bf16"],
                    help="fp32 (default) or bf16: several times faster on CPUs with AVX512-BF16/AMX and on GPUs")
    sp.add_argument("--chunk-tokens", type=POSITIVE,
                    help="tokens read per step through the KV cache (default 4096); racing judges after each")
    sp.add_argument("--rungs", type=_rungs,
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
    sp.add_argument("--threads", type=_threads, help="torch threads per process")
    _add_force(sp)
    sp.set_defaults(func=cmd_search)


def _add_finetune_parser(sub: Any) -> None:
    """Add the finetune subcommand to ``sub``."""
    ft = sub.add_parser("finetune", help="fine-tune with a RoPE method applied (accelerate; resumable)")
    _add_spec_args(ft)
    ft.set_defaults(model="teaching")
    ft.add_argument("--seq-len", type=_int_at_least(2), required=True, help="tokens per packed row")
    ft.add_argument("--steps", type=POSITIVE, default=400)
    ft.add_argument("--batch-size", type=POSITIVE, default=8, help="rows per micro-batch per process")
    ft.add_argument("--grad-accum", type=POSITIVE, default=1)
    ft.add_argument("--lr", type=_finite_float(0.0), default=2e-5)
    ft.add_argument("--warmup", type=NON_NEGATIVE, default=40)
    ft.add_argument("--schedule", choices=["cosine", "linear"], default="cosine")
    ft.add_argument("--checkpoint-every", type=POSITIVE, default=50)
    ft.add_argument("--mixed", action="store_true", help="mixed context window training (LongRoPE2)")
    ft.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto")
    ft.add_argument("--gradient-checkpointing", action="store_true")
    ft.add_argument("--attn", choices=["auto", "sdpa", "flash_attention_2"], default="auto")
    ft.add_argument("--corpora", nargs="+", default=["shakespeare", "bible", "stdlib"])
    ft.add_argument("--seed", type=NON_NEGATIVE, default=0)
    ft.add_argument("--run-dir", required=True)
    ft.add_argument("--resume", action="store_true")
    ft.add_argument("--threads", type=_threads)
    _add_force(ft)
    ft.add_argument("--quiet", action="store_true", help="no progress bar")
    ft.set_defaults(func=cmd_finetune)


def _add_progressive_parser(sub: Any) -> None:
    """Add the progressive subcommand to ``sub``."""
    pg = sub.add_parser("progressive", help="search -> fine-tune -> second search -> short-context recovery")
    pg.add_argument("--model", default="teaching")
    pg.add_argument("--stage1-length", type=_int_at_least(2), required=True)
    pg.add_argument("--stage2-length", type=_int_at_least(2), required=True)
    pg.add_argument("--run-dir", required=True, help="the pipeline resumes here at the stage where it stopped")
    for name in ("search1", "train", "search2", "recovery"):
        example = '{"steps": 60, "lr": 1e-3}' if name == "train" else '{"generations": 4}'
        pg.add_argument(f"--{name}", help=f"JSON overrides of the {name} budget, e.g. '{example}'")
    pg.add_argument("--corpus", default="shakespeare")
    pg.add_argument("--eval-documents", type=POSITIVE, default=8)
    pg.add_argument("--seed", type=NON_NEGATIVE, default=0)
    pg.add_argument("--threads", type=_threads)
    _add_force(pg)
    pg.set_defaults(func=cmd_progressive)


def _add_launch_parser(sub: Any) -> None:
    """Add the launch subcommand to ``sub``."""
    la = sub.add_parser("launch", help="run a notebook headless with parameters (papermill; N processes)")
    la.add_argument("notebook")
    la.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="a parameter (value as JSON)")
    la.add_argument("--processes", type=POSITIVE, default=1, help="processes (accelerate launch when > 1)")
    la.add_argument("--out", help="executed notebook path (default runs/launch/<name>)")
    la.set_defaults(func=cmd_launch)


def _add_teaching_parser(sub: Any) -> None:
    """Add the teaching subcommand to ``sub``."""
    teach = sub.add_parser("teaching", help="train or load the teaching model and report how it reads beyond L0")
    teach.add_argument("--preset", default="quality", choices=["quality", "ci"])
    teach.add_argument("--multiples", type=POSITIVE, nargs="+", default=[1, 2, 4, 8, 16])
    teach.add_argument("--n-documents", type=POSITIVE, default=8)
    teach.add_argument("--out", help="run folder for teaching.json and training_curve.png")
    teach.set_defaults(path_kinds={"out": "folder"})
    teach.set_defaults(func=cmd_teaching)


def _add_demo_parser(sub: Any) -> None:
    """Add the demo subcommand to ``sub``."""
    demo = sub.add_parser("demo", help="run the demo notebooks headless (make demo)")
    demo.add_argument("--out", default="runs/demo")
    demo.set_defaults(path_kinds={"out": "folder"})
    kind = demo.add_mutually_exclusive_group()
    kind.add_argument("--quick", action="store_true", help="tiny model and lengths (seconds, for testing)")
    kind.add_argument("--full", action="store_true",
                      help="every method at 8k and 16k with attention entropy (make demo-full; 8-20 min)")
    demo.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``workbench`` argument parser: one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="workbench", description="LongRoPE Workbench: RoPE context extension")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_rope_parser, _add_export_parser, _add_doctor_parser, _add_architectures_parser,
                _add_eval_parser, _add_search_parser,
                _add_finetune_parser, _add_progressive_parser, _add_launch_parser, _add_teaching_parser,
                _add_demo_parser):
        add(sub)  # the order of the help's list
    return parser


PATH_OPTIONS = {  # option -> what it names: a folder the command writes in, or a file it writes
    "run_dir": "folder", "out": "file", "markdown": "file", "json": "file",  # (a --json flag is not a path)
}


def _writable_path(option: str, value: str, kind: str) -> None:
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
    from .cache import CACHE_ENV

    kinds = dict(PATH_OPTIONS, **getattr(args, "path_kinds", {}))
    for dest, kind in kinds.items():
        value = getattr(args, dest, None)
        if isinstance(value, str) and value:
            _writable_path("--" + dest.replace("_", "-"), value, kind)
    cache = os.environ.get(CACHE_ENV)
    if cache:
        try:
            _writable_path(CACHE_ENV, cache, "folder")
        except CliError as e:
            raise CliError(f"{e} (the workbench's cache; unset it to use ~/.cache/longrope-workbench)") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_paths(args)
        return args.func(args)
    except (CliError, SpecError, ConfigError, ValueError, OSError) as e:  # every *Error of ours is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: what a search or fine-tune finished is kept in its run folder; run the same command "
              "with --resume to go on", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
