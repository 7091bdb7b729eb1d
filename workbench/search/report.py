"""The held-out report: the winner against the true PI / NTK / YaRN (each with its own attention factor) on
the held-out split, paired per window and per document (play) the windows come from."""

from __future__ import annotations

import math
from typing import Any

from ..events import Sink, null_sink
from ..hf import spec_for_model
from ..rope import RopeSpec
from .config import SearchConfig
from .results import HeldoutReport
from .targets import TARGETS


def document_of(window: Any) -> str:
    """The document (a play, for Shakespeare) a window was cut from: its label without the "#k" that
    ``data.samples`` gives a document's k-th window."""
    names = getattr(window, "names", None)
    label = names[0] if names else (getattr(window, "label", None) or getattr(window, "key", ""))
    return label.split("#", 1)[0]


def _per_document_wins(windows: list[Any], ours: list[float], theirs: list[float]) -> tuple[int, int]:
    """(documents where ours is lower, documents): each document's windows compared by their geometric mean."""
    logs: dict[str, list[tuple[float, float]]] = {}
    for w, a, b in zip(windows, ours, theirs, strict=True):
        logs.setdefault(document_of(w), []).append((math.log(a), math.log(b)))
    wins = sum(sum(a for a, _ in pairs) < sum(b for _, b in pairs) for pairs in logs.values())
    return wins, len(logs)


def _evaluate(model: Any, tokenizer: Any, specs: dict[str, RopeSpec], config: SearchConfig, n_documents: int,
              per_document: int, sink: Sink, progress: bool) -> tuple[list[Any], dict[str, Any], str]:
    """Every setting on the held-out windows: (windows, settings, the per-window key compared)."""
    from ..evaluate import needle_perplexity, perplexity

    settings: dict[str, Any] = {}
    target = TARGETS[config.mode]
    docs = target.documents(tokenizer, config, "heldout", n_documents, per_document=per_document, seed=config.seed + 1)
    if target.needles:
        for name, spec in specs.items():
            r = needle_perplexity(model, docs, spec=spec, label=name, progress=progress, sink=sink)
            settings[name] = {"ppl": r.ppl, "per_document_nll": r.per_document_nll}
        return docs, settings, "per_document_nll"
    for name, spec in specs.items():
        r = perplexity(model, docs, spec=spec, label=name, progress=progress, sink=sink)
        settings[name] = {"ppl": r.ppl, "tail_ppl": r.tail_ppl(), "per_document_ppl": r.per_document_ppl}
    return docs, settings, "per_document_ppl"


def heldout_report(model: Any, tokenizer: Any, result: Any, config: SearchConfig, *, n_documents: int = 20,
                   per_document: int = 4, sink: Sink = null_sink, progress: bool = False) -> HeldoutReport:
    """Re-evaluate the winner and PI / NTK / YaRN on up to ``n_documents`` held-out windows (up to
    ``per_document`` from each held-out document), paired per window and per document.

    The methods compared are the search's ``seed_methods``.
    """
    from ..rope import spec_from_dict

    specs: dict[str, RopeSpec] = {"searched": spec_from_dict(result.spec)}
    for m in config.seed_methods:
        specs[m] = spec_for_model(model, m, target_length=config.target_length)
    docs, settings, _ = _evaluate(model, tokenizer, specs, config, n_documents, per_document, sink, progress)
    out = HeldoutReport(config.target_length, config.mode, settings,
                        documents=[getattr(d, "label", None) or getattr(d, "key", "") for d in docs],
                        source_documents=sorted({document_of(d) for d in docs}), wins={}, gain={})
    compare_settings(out, docs)
    return out


def compare_settings(report: HeldoutReport, windows: list[Any]) -> None:
    """Fill ``report``'s comparisons of the searched factors with every other setting: the share of windows won,
    of documents won (perplexity reports: each document's windows by their geometric mean), and the gains."""
    settings, key = report.settings, report.per_window_key
    per = {n: v[key] for n, v in settings.items()}
    for m in report.methods:
        report.wins[m] = sum(a < b for a, b in zip(per["searched"], per[m], strict=True)) / len(windows)
        wins, n = _per_document_wins(windows, per["searched"], per[m]) if key == "per_document_ppl" else (0, 0)
        if n:
            report.document_wins[m] = wins / n
        report.gain[m] = 1 - settings["searched"]["ppl"] / settings[m]["ppl"]
        if "tail_ppl" in settings["searched"]:
            report.tail_gain[m] = 1 - settings["searched"]["tail_ppl"] / settings[m]["tail_ppl"]


def rank_correlation(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation of two equally long lists (ties share their mean rank); nan below 3 pairs."""
    if len(xs) != len(ys):
        raise ValueError(f"rank_correlation needs lists of one length, got {len(xs)} and {len(ys)}")
    if len(xs) < 3:
        return math.nan

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else math.nan


def rung_fidelity(folder: Any, rungs: tuple[int, ...]) -> list[dict[str, Any]]:
    """How well each rung of a multi-fidelity search ranked its candidates, from its journal.

    For rung i: how many candidates reached it, Spearman's rank correlation of their loss there with their loss
    at the next rung (every candidate that reached both), and with the whole window's (those read whole; a
    survivor-only sample, so it says how well the rung orders the candidates it kept, not those it dropped).
    """
    from .journal import Journal

    def rho(xs: list[float], ys: list[float]) -> float | None:  # None, not nan: the rows are written as JSON
        r = rank_correlation(xs, ys)
        return None if math.isnan(r) else r

    records = list(Journal.read(folder, repair=False).records.values())
    out = []
    for i, tokens in enumerate(rungs):
        here = [r for r in records if len(r.rung_loss) > i]
        nxt = [r for r in here if len(r.rung_loss) > i + 1]
        whole = [r for r in here if r.complete]
        out.append({
            "rung": i, "tokens": tokens, "candidates": len(here),
            "next": f"rung {i + 1}" if i + 1 < len(rungs) else "whole window",
            "with_next": rho([r.rung_loss[i] for r in nxt], [r.rung_loss[i + 1] for r in nxt])
            if i + 1 < len(rungs) else None, "with_next_pairs": len(nxt) if i + 1 < len(rungs) else None,
            "with_whole": rho([r.rung_loss[i] for r in whole], [sum(r.nll) / len(r.nll) for r in whole]),
            "with_whole_pairs": len(whole)})
    return out
