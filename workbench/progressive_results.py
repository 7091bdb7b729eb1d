"""What the progressive pipeline and short-context recovery report, typed, each presenting itself:
:class:`ShortContextReport` (perplexity at L0 before and after recovery, against the original model) and
:class:`ProgressiveReport` (held-out perplexity at L0, L1 and L2 through the stages, with the short-context one).

Each has ``summary()`` (one line), ``markdown()`` (its table), ``figures()`` (plotly, imported when drawn),
``to_dict()`` / ``from_dict()`` (``report.json``) and ``results(**context)`` (a notebook's ``results.json``).
LongRoPE's targets are here and nowhere else: stage 2 at L2 at most 1.2 x stage 1 at L1, and after recovery at most
2 % worse than the original model at L0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from .figure_style import BASE_LAYOUT, PALETTE

STAGE2_TARGET = 1.2  # stage 2 at L2 over stage 1 at L1: the longer window may cost at most this much
RECOVERY_TARGET = 0.02  # after recovery at L0 at most this much worse than the original model


@dataclass
class ShortContextReport:
    """Held-out perplexity at L0: the original model, the extended one before recovery (short factors all 1) and
    after it (``ppl_at_L0``; other settings may be added for comparison), over ``documents`` windows."""

    ppl_at_L0: dict[str, float]
    documents: int
    beyond: list[Any] = field(default_factory=list)  # PerplexityResults beyond L0 (the long factors at work)

    @property
    def change(self) -> float:
        """After recovery against the original model (below 0: better than the original)."""
        return self.ppl_at_L0["after recovery"] / self.ppl_at_L0["original"] - 1

    @property
    def met(self) -> bool:
        return self.change <= RECOVERY_TARGET

    def with_setting(self, name: str, ppl: float) -> ShortContextReport:
        """The same report with one more setting at L0 (drawn and tabulated beside the others)."""
        return replace(self, ppl_at_L0={**self.ppl_at_L0, name: ppl})

    def with_beyond(self, results: list[Any]) -> ShortContextReport:
        """The same report with results beyond L0 (e.g. before and after recovery at 2 L0: the short factors
        must leave the long ones alone)."""
        return replace(self, beyond=list(results))

    def summary(self) -> str:
        return (f"after recovery vs original at L0: {self.change:+.2%} (LongRoPE's target: at most "
                f"+{RECOVERY_TARGET:.0%}; below 0 is better than the original)")

    def markdown(self) -> str:
        """Perplexity at L0 per setting; beyond L0 (when measured), the perplexity table at each length."""
        table = "\n".join(["| at L0 | PPL |", "|---|---|", *(f"| {k} | {v:.3f} |" for k, v in self.ppl_at_L0.items())])
        if not self.beyond:
            return table
        from .evaluate import format_table

        return f"{table}\n\nBeyond L0 (the long factors):\n\n{format_table(self.beyond)}"

    def figures(self, L0: int | None = None) -> list[Any]:
        """Perplexity at L0 per setting (bars); beyond L0 (when measured), the loss by position."""
        import plotly.graph_objects as go

        from .evaluate.figures import position_loss_figure

        title = f"Perplexity at L0 = {L0}" if L0 else "Perplexity at L0"
        fig = go.Figure(layout={**BASE_LAYOUT, "title": title, "yaxis_title": "perplexity"})
        fig.add_bar(x=list(self.ppl_at_L0), y=list(self.ppl_at_L0.values()), marker=dict(color=PALETTE[0]))
        return [fig] + ([position_loss_figure(self.beyond, L0)] if self.beyond else [])

    def to_dict(self) -> dict[str, Any]:
        return {"ppl_at_L0": self.ppl_at_L0, "recovery_vs_original_at_L0": self.change, "documents": self.documents}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShortContextReport:
        return cls(dict(data["ppl_at_L0"]), data.get("documents", 0))

    def results(self, **context: Any) -> dict[str, Any]:
        """A notebook's results.json: its context, perplexity at L0 and the change against the original, and
        beyond L0 each setting's perplexity per length."""
        beyond: dict[str, dict[str, float]] = {}
        for r in self.beyond:
            beyond.setdefault(r.label, {})[str(r.length)] = r.ppl
        return {**context, "ppl_at_L0": self.ppl_at_L0, "change_vs_original": self.change, "met": self.met,
                **({"ppl_beyond_L0": beyond} if beyond else {})}


@dataclass
class ProgressiveReport:
    """Held-out perplexity (``ppl``: setting -> length -> PPL) at L0, L1 and L2: no fine-tuning (the original model
    with the stage-1 factors), after stage 1 (fine-tuned, stage-1 factors), after stage 2 (fine-tuned, composed
    factors); and the short-context report at L0."""

    lengths: list[int]
    ppl: dict[str, dict[str, float]]
    short: ShortContextReport
    documents: list[str] = field(default_factory=list)
    per_document: dict[str, Any] = field(default_factory=dict)

    @property
    def stage2_over_stage1(self) -> float:
        """After stage 2 at L2 over after stage 1 at L1."""
        L1, L2 = (str(L) for L in self.lengths[1:3])
        return self.ppl["after stage 2"][L2] / self.ppl["after stage 1"][L1]

    @property
    def met(self) -> dict[str, bool]:
        return {"stage2": self.stage2_over_stage1 <= STAGE2_TARGET, "recovery": self.short.met}

    @property
    def not_finite(self) -> list[str]:
        """Settings with a non-finite perplexity at some length."""
        return [k for k, row in self.ppl.items() if any(not math.isfinite(x) for x in row.values())]

    def summary(self) -> str:
        return (f"stage 2 at L2 / stage 1 at L1 = {self.stage2_over_stage1:.3f} (target <= {STAGE2_TARGET:g}); "
                + self.short.summary())

    def markdown(self) -> str:
        head = "| setting | " + " | ".join(f"PPL @ {L}" for L in self.lengths) + " |"
        rows = [head, "|---|" + "---|" * len(self.lengths)]
        rows += [f"| {label} | " + " | ".join(f"{row[str(L)]:.2f}" for L in self.lengths) + " |"
                 for label, row in self.ppl.items()]
        return "\n".join(rows) + "\n\n" + self.short.markdown()

    def figures(self) -> list[Any]:
        """Perplexity by length per stage, and the bars at L0."""
        import plotly.graph_objects as go

        fig = go.Figure(layout={**BASE_LAYOUT, "title": "Held-out perplexity by length", "xaxis_title": "tokens",
                                "yaxis_title": "perplexity", "yaxis_type": "log"})
        for label, row in self.ppl.items():
            fig.add_scatter(x=self.lengths, y=[row[str(L)] for L in self.lengths], name=label, mode="lines+markers")
        return [fig, *self.short.figures(self.lengths[0])]

    def to_dict(self) -> dict[str, Any]:
        return {"lengths": self.lengths, "ppl": self.ppl, "ppl_at_L0": self.short.ppl_at_L0,
                "stage2_at_L2_over_stage1_at_L1": self.stage2_over_stage1,
                "recovery_vs_original_at_L0": self.short.change, "documents": self.documents,
                "short_documents": self.short.documents,
                "targets": {"stage2_at_L2_over_stage1_at_L1": f"<= {STAGE2_TARGET:g}",
                            "recovery_vs_original_at_L0": f"<= +{RECOVERY_TARGET:.0%}"},
                "met": self.met, "per_document": self.per_document, "not_finite": self.not_finite}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProgressiveReport:
        short = ShortContextReport(dict(data["ppl_at_L0"]), data.get("short_documents", 0))
        return cls([int(L) for L in data["lengths"]], data["ppl"], short, list(data.get("documents", [])),
                   data.get("per_document", {}))

    def results(self, **context: Any) -> dict[str, Any]:
        """A notebook's results.json: its context and the report's numbers (without the per-document lists)."""
        return {**context, **{k: v for k, v in self.to_dict().items()
                              if k not in ("per_document", "documents", "short_documents")}}
