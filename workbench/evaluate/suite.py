"""An evaluation of several methods on one model, typed and presenting itself: perplexity by length, passkey,
the needle grid, needle-driven perplexity and short-context regression (notebook 07's ``results.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .perplexity import PerplexityResult, RegressionResult, result_at
from .report import format_table, regression_table
from .retrieval import NeedleGridResult, NeedlePerplexityResult, PasskeyResult


@dataclass
class Evaluation:
    """Every measurement of one model's methods at ``lengths`` (multiples of its L0)."""

    model: str
    L0: int
    lengths: list[int]
    corpus: str
    documents: list[str]
    ppl: list[PerplexityResult]
    passkey: list[PasskeyResult] = field(default_factory=list)
    needle_grid: NeedleGridResult | None = None
    needle_ppl: list[NeedlePerplexityResult] = field(default_factory=list)
    regression: list[RegressionResult] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.label for r in self.ppl))

    def summary(self) -> str:
        """Perplexity of each method at the longest length."""
        L = self.lengths[-1]
        return (f"{self.model} at {L} tokens ({L // self.L0} x L0): "
                + ", ".join(f"{m} PPL {result_at(self.ppl, m, L).ppl:.2f}" for m in self.methods))

    def markdown(self) -> str:
        """Perplexity per length (with seconds), and the short-context regression when measured."""
        parts = [format_table(self.ppl)]
        if self.regression:
            parts.append(regression_table(self.regression))
        return "\n\n".join(parts)

    def figures(self) -> list[Any]:
        """Perplexity by length, loss by position at the longest length, the needle grid when measured."""
        from .figures import needle_heatmap_figure, position_loss_figure, ppl_by_length_figure

        L = self.lengths[-1]
        figs = [ppl_by_length_figure(self.ppl, self.L0), position_loss_figure([r for r in self.ppl if r.length == L],
                                                                              self.L0)]
        return figs + ([needle_heatmap_figure(self.needle_grid)] if self.needle_grid else [])

    def to_dict(self) -> dict[str, Any]:
        """The numbers a reader compares (results.json); the full results are the run folder's ppl.json, ..."""
        L = self.lengths[-1]
        return {
            "model": self.model, "L0": self.L0, "lengths": self.lengths, "corpus": self.corpus,
            "documents": self.documents,
            "ppl": {m: {str(n): round(result_at(self.ppl, m, n).ppl, 3) for n in self.lengths} for m in self.methods},
            "tail_ppl": {m: result_at(self.ppl, m, L).tail_ppl() for m in self.methods},
            "passkey": {r.label: dict(zip(map(str, r.lengths), r.accuracy, strict=True)) for r in self.passkey},
            "needle_accuracy": self.needle_grid.accuracy if self.needle_grid else None,
            "needle_ppl": {r.label: r.ppl for r in self.needle_ppl},
            "short_context_change": {r.after_label: r.change for r in self.regression},
        }
