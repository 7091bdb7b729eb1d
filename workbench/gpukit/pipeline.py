"""The pipeline steps of ``gpu-run``: the search (its budget sized from the measured seconds per forward, its
held-out windows), mixed-context-window fine-tuning with a resume, and notebook 05 through the launcher."""

from __future__ import annotations

import json
import shlex
import statistics
import time
from pathlib import Path
from typing import Any

from .context import (
    CLEANUPS,
    NOTEBOOK,
    STOP,
    StepContext,
    StepError,
    free_memory,
    load_lm,
    ramp_spec,
    warm_up,
    write_json,
)


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
    warm_up(model, doc.tokens, "fp32")
    with patch(model, ramp_spec(model, ctx.preset.target_length)):
        t = time.time()
        token_nll(model, doc.tokens[None])
    return time.time() - t, "measured by the search step (no scale result)"


def heldout_windows(ctx: StepContext, model: Any, tokenizer: Any, result: Any, res: dict[str, Any]) -> dict[str, Any]:
    """The winner and PI / NTK / YaRN on held-out windows of every report corpus, each window scored on its own
    (whole-window and last-quarter perplexity), the report (:class:`~workbench.search.HeldoutReport`) redone after
    each window so a step cut short keeps what it read."""
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
                return rep
            r = perplexity(model, [w], spec=spec, label=name, length=L, progress=False)
            row["nll"][name], row["ppl"][name], row["tail_ppl"][name] = r.nll, r.ppl, r.tail_ppl()
        rep["windows"].append(row)
        ctx.log(f"held-out {corpus} {w.label[:40]}: " + ", ".join(f"{k} {v:.2f}" for k, v in row["ppl"].items()))
        _heldout_report(rep, [w for _, w in windows])
        ctx.save(res)
    return rep


def _heldout_report(rep: dict[str, Any], samples: list[Any]) -> None:
    """``rep["report"]``: the held-out report over the windows read so far."""
    from workbench.search import HeldoutReport
    from workbench.search.heldout import heldout_settings
    from workbench.search.report import compare_settings, document_of

    rows = rep["windows"]
    names = list(rows[0]["ppl"])
    flat = [{"setting": n, **{k: r[k][n] for k in ("nll", "ppl", "tail_ppl")}} for r in rows for n in names]
    read = samples[:len(rows)]
    report = HeldoutReport(rep["length"], "longrope", heldout_settings(flat, names), documents=[r["window"] for r in rows],
                           source_documents=sorted({document_of(w) for w in read}), wins={}, gain={},
                           corpora=[r["corpus"] for r in rows])
    compare_settings(report, read)
    rep.update(report=report.to_dict(), n_windows=len(rows))


def step_search(ctx: StepContext) -> dict[str, Any]:
    """The LongRoPE search L0 -> 8 L0 with a budget sized to fit, then the held-out report."""
    from workbench.events import Event
    from workbench.search import SearchConfig, run_search

    p = ctx.preset
    lm = load_lm(ctx, weights=p.search_weights)
    config_path = ctx.work / "steps" / "search-config.json"
    if config_path.exists():  # a resumed search must keep the settings its journal was made with
        sizing = json.loads(config_path.read_text())
    else:
        sec, source = _seconds_per_forward(ctx, lm.model, lm.tokenizer)
        sizing = {"seconds_per_forward": sec, "measured_by": source,
                  **size_search(sec, p.search_documents, p.search_seconds, p.max_population)}
        write_json(config_path, sizing)
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


def _train_estimate(ctx: StepContext, model: Any, cfg: Any) -> float:
    """Log the fine-tune's estimate (memory: the rates come with its first steps); its peak on the device, in GB."""
    from workbench.estimate import RUNTIME_BYTES, Estimate, Shape
    from workbench.evaluate import resolve_dtype

    est = Estimate("train", Shape.from_config(model.config.to_dict()), resolve_dtype(cfg.dtype),
                   "train-checkpointed" if cfg.gradient_checkpointing else "train",
                   ((cfg.seq_len, cfg.steps * cfg.grad_accum),), cfg.batch_size)
    ctx.log(est.line())
    return (est.peak_bytes - (RUNTIME_BYTES if ctx.cuda else 0)) / 1e9


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
        lm = load_lm(ctx, to_device=False)  # finetune places it (accelerate)
        res["estimated_peak_gb"] = _train_estimate(ctx, lm.model, cfg)
        ctx.reset_peak()
        r1 = finetune(lm.model, lm.tokenizer, ramp_spec(lm.model, cfg.seq_len), cfg, folder,
                      resume=(folder / "params.json").exists(), sink=sink, stop=lambda: last[0] >= half or ctx.stop(),
                      progress=False, model_name=p.model)
        peaks.append(ctx.peak_gb())
        res["phase1"] = {"steps": len(r1.history), "seconds": r1.seconds, "stopped": r1.stopped, **_rate(r1.history),
                         "loss": [h["loss"] for h in r1.history]}
        ctx.save(res)
        del lm, r1
        free_memory()
        if ctx.stop():
            ctx.cut_short = True
            return res
    ck = dict(list_checkpoints(folder)).get(half)
    res["checkpoint_bytes"] = (ck / "state.pt").stat().st_size if ck is not None else None
    lm = load_lm(ctx, to_device=False)
    ctx.reset_peak()
    t = time.time()
    r2 = finetune(lm.model, lm.tokenizer, ramp_spec(lm.model, cfg.seq_len), cfg, folder, resume=True, sink=sink,
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
