"""Several methods read on the same documents, typed and presenting itself: perplexity at each length, the
attention entropy of the longest forward, and what each method is in transformers (notebook 02's results)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .perplexity import PerplexityResult, result_at
from .report import evaluation_table


@dataclass
class MethodComparison:
    """Every method of ``specs`` (None: no scaling) at ``lengths`` on ``documents``; ``entropy`` from the longest
    forward (a method's second result, if any, reads the same inputs without its attention factor)."""

    model: str
    corpus: str
    L0: int
    lengths: list[int]
    specs: dict[str, Any]
    results: list[PerplexityResult] = field(default_factory=list)
    entropy: list[Any] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    dtype: str = "fp32"

    @property
    def measured(self) -> bool:
        return bool(self.results)

    @classmethod
    def read(cls, folder: str | Path) -> MethodComparison | None:
        """The comparison a notebook-02 output folder holds (its results.json, ppl.json and entropy.json); None
        when nothing was measured there."""
        from ..entropy import EntropyResult
        from ..rope import spec_from_dict

        folder = Path(folder)
        if not (folder / "results.json").is_file() or not (folder / "ppl.json").is_file():
            return None
        d = json.loads((folder / "results.json").read_text())
        results = [PerplexityResult.from_dict(r) for r in json.loads((folder / "ppl.json").read_text())]
        entropy = folder / "entropy.json"
        return cls(d["model"], d["corpus"], d["L0"], d["lengths"],
                   {r.label: spec_from_dict(r.spec) if r.spec else None for r in results}, results,
                   [EntropyResult.from_dict(e) for e in json.loads(entropy.read_text())] if entropy.is_file() else [],
                   list(d.get("documents", [])), d.get("dtype", "fp32"))

    def entropy_beyond_L0(self) -> dict[str, float]:
        """Mean attention entropy of the positions from L0 on, per setting."""
        from ..entropy import mean_entropy_beyond

        return {r.label: mean_entropy_beyond(r, self.L0) for r in self.entropy}

    def rope_parameters(self) -> dict[str, Any]:
        """What each method is as transformers ``rope_parameters`` (or why it cannot be written)."""
        from ..hf import to_hf

        out: dict[str, Any] = {}
        for name, spec in self.specs.items():
            try:
                out[name] = to_hf(spec).rope_parameters if spec is not None else {"rope_type": "default"}
            except ValueError as e:
                out[name] = {"not_expressible": str(e)}
        return out

    def summary(self) -> str:
        if not self.measured:
            return f"{self.model}: nothing measured"
        L = self.lengths[-1]
        return (f"{self.model} at {L} tokens (L0 {self.L0}): "
                + ", ".join(f"{m} PPL {result_at(self.results, m, L).ppl:.2f}" for m in self.specs))

    def markdown(self) -> str:
        """The evaluation table: PPL per length, within and beyond L0, last quarter, at L0, entropy beyond L0."""
        return evaluation_table(self.results, self.L0, self.entropy_beyond_L0()) if self.measured else ""

    def figures(self, part: str | None = None) -> list[Any]:
        """``part`` "perplexity": by length (when several) and by position at the longest; "entropy": by query
        position; None: both."""
        from .figures import entropy_position_figure, position_loss_figure, ppl_by_length_figure

        figs: list[Any] = []
        if part in (None, "perplexity") and self.measured:
            longest = [r for r in self.results if r.length == self.lengths[-1]]
            figs += [ppl_by_length_figure(self.results, self.L0)] if len(self.lengths) > 1 else []
            figs.append(position_loss_figure(longest, self.L0))
        if part in (None, "entropy") and self.entropy:
            figs.append(entropy_position_figure(self.entropy, self.L0))
        return figs

    def to_dict(self) -> dict[str, Any]:
        """The notebook's results.json numbers (the context it adds: model notes, figures)."""
        out: dict[str, Any] = {"model": self.model, "corpus": self.corpus, "lengths": self.lengths, "L0": self.L0,
                               "measured": self.measured, "rope_parameters": self.rope_parameters()}
        if self.measured:
            L = self.lengths[-1]
            out.update({
                "documents": self.documents, "dtype": self.dtype,
                "ppl": {m: {str(n): result_at(self.results, m, n).ppl for n in self.lengths} for m in self.specs},
                "tail_ppl": {m: result_at(self.results, m, L).tail_ppl() for m in self.specs},
                "seconds": {m: sum(r.seconds for r in self.results if r.label == m) for m in self.specs},
                "entropy_beyond_L0": self.entropy_beyond_L0(),
                "ppl_beyond_L0": {m: result_at(self.results, m, L).range_ppl(self.L0) for m in self.specs} if L > self.L0 else {},
            })
        return out
