"""The readable part of ``gpu.json``: a few markdown lines per step (standard library only)."""

from __future__ import annotations

from typing import Any


def _f(x: Any, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _setup(r: dict[str, Any]) -> list[str]:
    if not r.get("pack"):
        return [r.get("note", "no pack")]
    g = r["gguf"]
    return [f"{g['name']} ({g['bytes'] / 2**20:.1f} MiB) reassembled from {r['parts']} part(s), sha256 verified; "
            f"{r['wheels']} wheel(s) installed ({r['seconds_verify_and_install']:.1f} s + {r['seconds_assemble']:.1f} s)"]


def _probe(r: dict[str, Any]) -> list[str]:
    gpu = r.get("gpu")
    where = (f"{gpu['name']} (compute {gpu['capability']}, {gpu['memory_gb']:.0f} GB, bf16 {gpu['bf16']})"
             if gpu else "no GPU (CPU)")
    lines = [f"{where}; torch {r['torch']} (CUDA {r['cuda']}), transformers {r['libraries'].get('transformers')}, "
             f"accelerate {r['libraries'].get('accelerate')}, Python {r['python']}",
             f"flash_attn: {r.get('flash_attn')}; model attention: {r.get('attn_implementation')}"]
    for case, v in (r.get("sdpa") or {}).items():
        if isinstance(v, dict):
            ok = [b for b, s in v["backends"].items() if s == "runs"]
            lines.append(f"SDPA {case}: selects {', '.join(v['selected']) or '?'}; backends that run: {', '.join(ok)}")
    m = r.get("model")
    if m:
        lines.append(f"model {m['name']}: loaded in {m['load_seconds']:.1f} s"
                     + (" (converted from the GGUF)" if m.get("converted_from_gguf") else ""))
    bad = {k: v for k, v in (r.get("imports") or {}).items() if v != "imports"}
    if bad:
        lines.append(f"imports failing: {bad}")
    return lines


def _parity(r: dict[str, Any]) -> list[str]:
    lines = [f"PPL at {r['length']} on {r['document']}; reference {r['reference_ppl']:.3f} ({r['reference']})", "",
             "| setting | PPL | vs reference | within 1 % | s |", "|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['setting']} | {row['ppl']:.3f} | {row['vs_reference']:+.3%} | "
                     f"{'yes' if row['within_1_percent'] else 'NO'} | {row['seconds']:.2f} |")
    return lines


def _scale(r: dict[str, Any]) -> list[str]:
    lines = [f"one window of {r['document']}, {r['dtype']}; LongRoPE: {r['longrope_spec']}", "",
             "| length | setting | s | tokens/s | peak GPU GB | PPL | last-quarter PPL |", "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['length']} | {row['setting']} | {row['seconds']:.2f} | {row['tokens_per_s']:.0f} | "
                     f"{_f(row['peak_gpu_gb'])} | {row['ppl']:.2f} | {row['tail_ppl']:.2f} |")
    return lines


def _search(r: dict[str, Any]) -> list[str]:
    s, z = r.get("search", {}), r["sizing"]
    lines = [f"budget {z['evaluations']} evaluations sized from {z['seconds_per_forward']:.2f} s per forward "
             f"({z['measured_by']}): population {z['population']}, {z['generations']} generation(s), "
             f"n_hat stage {z['n_hat_stage']}"]
    if s:
        from ..search import (
            seed_label,  # the seeds, not the methods: evaluated with LongRoPE's attention factor
        )

        base = ", ".join(f"{seed_label(k)} {v:.3f}" for k, v in s.get("baselines", {}).items())
        lines.append(f"{s['evaluations']} evaluations in {s['seconds']:.0f} s{' (stopped by its box)' if s['stopped'] else ''}; "
                     f"best train-split PPL {s['best_fitness']:.3f} (n_hat {s['best_n_hat']}) vs {base}")
    h = r.get("heldout") or {}
    if h.get("report"):
        from ..search import HeldoutReport

        rep = HeldoutReport.from_dict(h["report"])
        lines += ["", f"held-out at {h['length']}, {h['n_windows']} windows:", "", rep.window_markdown(), "",
                  rep.markdown(), "", rep.summary()]
    return lines


def _train(r: dict[str, Any]) -> list[str]:
    c = r["config"]
    lines = [f"seq_len {c['seq_len']}, {c['steps']} steps of {r.get('tokens_per_step', '?')} tokens "
             f"(batch {c['batch_size']} x accumulation {c['grad_accum']}, mixed short/long rows), dtype {c['dtype']}, "
             f"gradient checkpointing {c['gradient_checkpointing']}"]
    for phase in ("phase1", "phase2"):
        ph = r.get(phase)
        if ph:
            lines.append(f"{phase}: {ph['steps']} steps in {ph['seconds']:.1f} s, {_f(ph['tokens_per_s'], '.0f')} tokens/s "
                         f"after the first step, losses {', '.join(f'{x:.3f}' for x in ph['loss'])}"
                         + (f"; resumed from step {ph['resumed_from']}" if ph.get("resumed_from") else ""))
    lines.append(f"peak GPU memory {_f(r.get('peak_gpu_gb'))} GB; checkpoint {_f((r.get('checkpoint_bytes') or 0) / 1e9)} GB; "
                 f"resumed and finished: {r.get('resumed_and_finished')}")
    return lines


def _notebook(r: dict[str, Any]) -> list[str]:
    lines = [f"{r.get('hardware', {}).get('words', '?')}: exit {r.get('returncode')} in {_f(r.get('seconds'), '.0f')} s"]
    res = r.get("results")
    if res:
        from ..progressive_results import ProgressiveReport

        report = ProgressiveReport.from_dict(res)  # the notebook's results.json
        lines.append(f"{report.summary()}; PPL by length: "
                     + "; ".join(f"{k}: " + ", ".join(f"{L} {v:.2f}" for L, v in row.items())
                                 for k, row in report.ppl.items()))
    return lines


SUMMARIES = {"setup": _setup, "probe": _probe, "parity": _parity, "scale": _scale, "search": _search,
             "train": _train, "notebook": _notebook}


def summarize(steps: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines: each step's status and seconds, then what it measured."""
    lines = []
    for name, rec in steps.items():
        status = rec.get("status", "pending")
        secs = f" in {rec['seconds']:.0f} s" if rec.get("seconds") is not None else ""
        box = f" (box {rec['box_s']:.0f} s" if rec.get("box_s") else ""
        if box:
            box += f", {rec['over_box_s']:.0f} s over it)" if rec.get("over_box_s") else ")"
        lines.append(f"### {name}: {status}{secs}{box}")
        if rec.get("error"):
            lines.append(f"error: {rec['error']}")
        if rec.get("result"):
            try:
                lines += SUMMARIES[name](rec["result"])
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:  # a partial result: say what is there
                lines.append(f"(partial result; fields: {', '.join(rec['result'])}; {type(e).__name__}: {e})")
        lines.append("")
    return lines
