"""Results as files and markdown tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .perplexity import PerplexityResult, RegressionResult


def write_results(results: Any, path: str | Path) -> Path:
    """Write a result (anything with ``to_dict``) or a list of results as JSON; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = [r.to_dict() for r in results] if isinstance(results, list) else results.to_dict()
    p.write_text(json.dumps(data, indent=1, default=float))
    return p


def _seconds(r: PerplexityResult | None) -> str:
    if r is None:
        return ""
    if r.tokens_forwarded == 0:
        return "(prefix)"
    return f"{r.seconds:.0f}" if r.seconds >= 10 else f"{r.seconds:.1f}"


def format_table(results: list[PerplexityResult]) -> str:
    """A markdown table: one row per setting, PPL (seconds) per length."""
    lengths = sorted({r.length for r in results})
    labels = list(dict.fromkeys(r.label for r in results))
    by = {(r.label, r.length): r for r in results}
    head = "| method | " + " | ".join(f"PPL @ {L}" for L in lengths) + " | " + " | ".join(
        f"seconds @ {L}" for L in lengths) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(lengths))]
    for lab in labels:
        cells = [f"{by[(lab, L)].ppl:.2f}" if (lab, L) in by else "" for L in lengths]
        secs = [_seconds(by.get((lab, L))) for L in lengths]
        lines.append(f"| {lab} | " + " | ".join(cells) + " | " + " | ".join(secs) + " |")
    return "\n".join(lines)


def evaluation_table(results: list[PerplexityResult], original_max_position_embeddings: int,
                     entropy_beyond: dict[str, float] | None = None) -> str:
    """A markdown table per method: PPL at each length, at the longest length also the PPL of the positions
    within and beyond L0 (where the curve's buckets allow) and of the last quarter, the change of PPL at L0
    against the first setting (short-context regression), and mean attention entropy beyond L0 if measured."""
    L0 = original_max_position_embeddings
    lengths = sorted({r.length for r in results})
    labels = list(dict.fromkeys(r.label for r in results))
    by = {(r.label, r.length): r for r in results}
    top = lengths[-1]
    base = by.get((labels[0], L0))
    split = top > L0 and all(L0 % r.bucket_size == 0 for r in results if r.length == top)
    head = ["method", *(f"PPL @ {L}" for L in lengths)]
    if split:
        head += [f"PPL of positions < L0 @ {top}", f"PPL of positions ≥ L0 @ {top}"]
    head.append(f"last-quarter PPL @ {top}")
    if base is not None:
        head.append(f"PPL @ L0 vs {labels[0]}")
    if entropy_beyond:
        head.append("attention entropy beyond L0 (nats)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lab in labels:
        r_top = by.get((lab, top))
        cells = [lab, *(f"{by[(lab, L)].ppl:.2f}" if (lab, L) in by else "" for L in lengths)]
        if split:
            cells += [f"{r_top.range_ppl(0, L0):.2f}", f"{r_top.range_ppl(L0):.2f}"] \
                if r_top is not None else ["", ""]
        cells.append(f"{r_top.tail_ppl():.2f}" if r_top is not None else "")
        if base is not None:
            r = by.get((lab, L0))
            cells.append(f"{r.ppl / base.ppl - 1:+.1%}" if r is not None else "")
        if entropy_beyond:
            cells.append(f"{entropy_beyond[lab]:.3f}" if lab in entropy_beyond else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def regression_table(results: list[RegressionResult]) -> str:
    """A markdown table: per method, perplexity at L0 without and with it, and the change."""
    rows = ["| method | PPL @ L0, original | PPL @ L0, with the method | change |", "|---|---|---|---|"]
    rows += [f"| {r.after_label} | {r.before_ppl:.2f} | {r.after_ppl:.2f} | {r.change:+.1%} |" for r in results]
    return "\n".join(rows)
