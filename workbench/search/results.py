"""What a search leaves, typed, each presenting itself: :class:`SearchResult` (the winner and how the search got
there, ``result.json``), :class:`HeldoutReport` (the winner against the methods on held-out windows,
``report.json``) and :class:`SearchOutcome` (both, with the run's context: a notebook's ``results.json``).

Each has ``summary()`` (one line), ``markdown()`` (its table), ``figures()`` (plotly figures; plotly is imported
when they are drawn) and ``to_dict()`` / ``from_dict()`` (its JSON). The keys of those JSON files are spelled
here and nowhere else: the CLI, the widgets and the notebooks ask these classes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..events import FromDict
from ..figure_style import BASE_LAYOUT, color_of, hline, method_label
from .targets import seed_label


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class SearchResult(FromDict):
    """The winner and how the search got there.

    ``baselines`` is the search-split fitness of the seeds (keys: the seed's method, ``baseline_labels``
    names them "PI seed", ...): their frequency factors in this search's spec, with its attention factor,
    not the methods themselves; the held-out report (:class:`HeldoutReport`) compares the methods.
    """

    best_factors: list[float]
    best_n_hat: int
    best_fitness: float
    critical_dim: int | None
    spec: dict[str, Any]
    rope_parameters: dict[str, Any] | None
    export_notes: list[str]
    baselines: dict[str, float]
    generations: list[dict[str, Any]]
    evaluations: int
    evaluations_replayed: int
    tokens_forwarded: int
    tokens_saved_by_racing: int
    seconds: float
    stopped: bool
    notes: list[str] = field(default_factory=list)
    baseline_labels: dict[str, str] = field(default_factory=dict)
    racing: str = "exact"
    baseline_factors: dict[str, list[float]] = field(default_factory=dict)  # the seeds' factor curves

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, folder: str | Path) -> SearchResult | None:
        """The result a search run folder holds (None: the search has not finished)."""
        data = _read(Path(folder) / "result.json")
        return cls.from_dict(data) if data is not None else None

    def summary(self) -> str:
        return (f"best PPL {self.best_fitness:.4f} (seeds, with the search's attention factor: "
                + ", ".join(f"{self.baseline_labels.get(k, seed_label(k))} {v:.4f}" for k, v in self.baselines.items())
                + f"); n_hat {self.best_n_hat}; {self.evaluations} evaluations ({self.evaluations_replayed} from the "
                f"journal), {self.tokens_forwarded:,} token-forwards, {self.tokens_saved_by_racing:,} saved by "
                f"{self.racing} racing, {self.seconds:.0f} s" + (" — STOPPED" if self.stopped else ""))

    def markdown(self) -> str:
        """The best against the seeds on the search split."""
        rows = ["| search split | PPL |", "|---|---|", f"| best (n̂ {self.best_n_hat}) | {self.best_fitness:.3f} |"]
        rows += [f"| {self.baseline_labels.get(k, seed_label(k))} | {v:.3f} |" for k, v in self.baselines.items()]
        return "\n".join(rows)

    def figures(self) -> list[Any]:
        """Fitness per generation against the seeds, and the best factor curve against the seeds' curves."""
        return [search_progress_figure(self.generations, self.baselines),
                search_factors_figure(self.best_factors, [], self.baseline_factors)]


@dataclass
class HeldoutReport:
    """The searched factors against each method (with its own attention factor) on held-out windows.

    ``settings``: per setting ("searched" and each method) its perplexity (``ppl``; ``tail_ppl``, the last
    quarter's, for LongRoPE) and its per-window values; ``wins``: the share of windows where the searched factors
    are better; ``document_wins``: the share of source documents (each compared by its windows' geometric mean);
    ``gain``: 1 - searched / method perplexity (``tail_gain`` on the last quarter).
    """

    target_length: int
    mode: str
    settings: dict[str, dict[str, Any]]
    documents: list[str]
    source_documents: list[str]
    wins: dict[str, float]
    gain: dict[str, float]
    document_wins: dict[str, float] = field(default_factory=dict)
    tail_gain: dict[str, float] = field(default_factory=dict)
    corpora: list[str] = field(default_factory=list)  # each window's corpus, when the report reads several

    KEYS = {"wins": "wins_vs_", "document_wins": "document_wins_vs_", "gain": "gain_vs_",
            "tail_gain": "tail_gain_vs_"}  # report.json spells each comparison as <key><method>

    @property
    def methods(self) -> list[str]:
        """The methods compared with the searched factors."""
        return [name for name in self.settings if name != "searched"]

    @property
    def per_window_key(self) -> str:
        """The per-window value compared: perplexity (LongRoPE) or the answer's loss (LongRoPE2, needles)."""
        return "per_document_ppl" if "per_document_ppl" in self.settings["searched"] else "per_document_nll"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target_length": self.target_length, "mode": self.mode, "settings": self.settings,
                               "documents": self.documents, "source_documents": self.source_documents}
        if self.corpora:
            out["corpora"] = self.corpora
        for attr, prefix in self.KEYS.items():
            out.update({prefix + m: v for m, v in getattr(self, attr).items()})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeldoutReport:
        methods = [name for name in data["settings"] if name != "searched"]
        compared = {attr: {m: data[prefix + m] for m in methods if prefix + m in data}
                    for attr, prefix in cls.KEYS.items()}
        return cls(target_length=data["target_length"], mode=data["mode"], settings=data["settings"],
                   documents=list(data.get("documents", [])),
                   source_documents=list(data.get("source_documents", [])), corpora=list(data.get("corpora", [])),
                   **compared)

    @classmethod
    def read(cls, folder: str | Path) -> HeldoutReport | None:
        """The report a search run folder holds (None: not written, e.g. a stopped search)."""
        data = _read(Path(folder) / "report.json")
        return cls.from_dict(data) if data is not None else None

    def summary(self, against: str = "yarn") -> str:
        """Every setting's held-out perplexity, and how often the searched factors beat ``against``."""
        against = against if against in self.wins else self.methods[-1]
        n, docs = len(self.documents), len(self.source_documents)
        per_doc = (f" and on {self.document_wins[against] * docs:.0f} of the {docs} held-out documents they come "
                   "from" if against in self.document_wins else "")
        return ("held-out: " + ", ".join(f"{method_label(k)} {v['ppl']:.3f}" for k, v in self.settings.items())
                + f"; searched better than {method_label(against)} on {self.wins[against] * n:.0f} of {n} windows"
                f"{per_doc}; gain vs {method_label(against)} {self.gain[against]:+.2%}")

    def markdown(self) -> str:
        """Per setting: held-out perplexity (and the last quarter's), and the searched factors' gain over it."""
        tail = all("tail_ppl" in s for s in self.settings.values())
        head = "| held-out | PPL |" + (" last-quarter PPL |" if tail else "") + " searched's gain | windows won |"
        rows = [head, "|---|---|" + ("---|" if tail else "") + "---|---|"]
        for name, s in self.settings.items():
            gain = f"{self.gain[name]:+.2%}" if name in self.gain else ""
            won = f"{self.wins[name]:.0%}" if name in self.wins else ""
            rows.append(f"| {method_label(name)} | {s['ppl']:.3f} |" + (f" {s['tail_ppl']:.3f} |" if tail else "")
                        + f" {gain} | {won} |")
        return "\n".join(rows)

    def window_markdown(self) -> str:
        """Per window: every setting's value (perplexity, or the answer's loss), the lowest in bold."""
        key, names = self.per_window_key, list(self.settings)
        rows = ["| window | " + " | ".join(method_label(n) for n in names) + " |", "|---|" + "---|" * len(names)]
        for k, doc in enumerate(self.documents):
            values = [self.settings[n][key][k] for n in names]
            cells = [f"**{v:.3f}**" if v == min(values) else f"{v:.3f}" for v in values]
            where = f"{self.corpora[k]}: {doc}" if self.corpora else doc
            rows.append(f"| {where} | " + " | ".join(cells) + " |")
        return "\n".join(rows)

    def figures(self, against: str = "yarn") -> list[Any]:
        """The paired per-window difference against ``against``."""
        return [heldout_figure(self, against)]


@dataclass
class SearchOutcome:
    """A search run folder's result and held-out report, with what the run was (model, budget, mode...)."""

    result: SearchResult
    report: HeldoutReport | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: str | Path, **context: Any) -> SearchOutcome | None:
        result = SearchResult.read(folder)
        return cls(result, HeldoutReport.read(folder), context) if result is not None else None

    def summary(self) -> str:
        return self.result.summary() + (f"\n{self.report.summary()}" if self.report else "")

    def markdown(self) -> str:
        return self.result.markdown() + (f"\n\n{self.report.markdown()}" if self.report else "")

    def figures(self) -> list[Any]:
        return self.result.figures() + (self.report.figures() if self.report else [])

    def to_dict(self) -> dict[str, Any]:
        """The results.json of a search notebook: the run's context, the result's numbers, the report."""
        r = self.result
        keep = ("best_fitness", "best_n_hat", "best_factors", "baselines", "evaluations", "tokens_forwarded",
                "tokens_saved_by_racing", "seconds", "rope_parameters", "export_notes")
        return {**self.context, **{k: getattr(r, k) for k in keep},
                "report": self.report.to_dict() if self.report else None}


# ---- figures (plotly is imported when one is drawn) ----

def search_progress_figure(generations: list[dict], baselines: dict[str, float]) -> Any:
    """Best and median parent fitness per generation, with the seeds' fitness as reference lines (a seed is a
    method's factors evaluated with LongRoPE's attention factor, not the method itself). A seed far above the
    population (PI at 4x without fine-tuning: 8x its perplexity) is named in the legend, not drawn: its line would
    squash the generations into one."""
    import plotly.graph_objects as go

    gens = [g for g in generations if math.isfinite(g["best"])]
    fig = go.Figure(layout={**BASE_LAYOUT, "width": 520})
    if gens:
        x = list(range(len(gens)))
        fig.add_scatter(x=x, y=[g["best"] for g in gens], name="best", mode="lines+markers",
                        line=dict(color=color_of("longrope"), width=3))
        fig.add_scatter(x=x, y=[g["median"] for g in gens], name="median of parents", mode="lines",
                        line=dict(color="#999999", width=2))
        ceiling = 1.5 * max(g["median"] for g in gens)
        for name, fit in baselines.items():
            off = fit > ceiling
            fig.add_scatter(x=[0, max(1, len(gens) - 1)], y=[fit, fit] if not off else [None, None], mode="lines",
                            name=f"{seed_label(name)} {fit:.2f}" + (" (far above: not drawn)" if off else ""),
                            line=dict(color=color_of(name, other="#444"), dash="dash", width=1.5))
        fig.update_xaxes(dtick=1 if len(gens) <= 12 else None)
    fig.update_layout(title="Fitness per generation", xaxis_title="generation",
                      yaxis_title="perplexity (search split)")
    return fig


def search_factors_figure(best: list[float], parents: list[list[float]], baselines: dict[str, list[float]]) -> Any:
    """The parents' factor curves (grey), the best (bold) and the seeded baselines (dashed)."""
    import plotly.graph_objects as go

    fig = go.Figure(layout={**BASE_LAYOUT, "width": 520})
    for name, f in baselines.items():
        fig.add_scatter(y=f, mode="lines", name=seed_label(name),
                        line=dict(color=color_of(name, other="#444"), dash="dash", width=1.5))
    for k, f in enumerate(parents):
        fig.add_scatter(y=f, mode="lines", showlegend=k == 0, name="parents",
                        line=dict(color="rgba(120,120,120,0.35)", width=1))
    if best:
        fig.add_scatter(y=best, mode="lines+markers", name="best", line=dict(color=color_of("longrope"), width=4),
                        marker=dict(size=4))
    fig.update_layout(title="Factor curves", xaxis_title="pair i", yaxis_title="λᵢ")
    return fig


def heldout_figure(report: HeldoutReport | dict, against: str = "yarn") -> Any:
    """Per held-out window: the searched factors' perplexity minus a method's, paired (below 0: searched better).

    Absolute perplexities on a diagonal hide the difference (every point sits on it); the paired difference shows
    how large it is and on which windows."""
    import plotly.graph_objects as go

    rep = report if isinstance(report, HeldoutReport) else HeldoutReport.from_dict(report)
    key = rep.per_window_key
    base, searched = rep.settings[against][key], rep.settings["searched"][key]
    diff = [s - b for s, b in zip(searched, base, strict=True)]
    names = rep.documents or [f"window {k + 1}" for k in range(len(diff))]
    order = sorted(range(len(diff)), key=lambda k: diff[k])
    name = method_label(against)
    unit = "PPL" if key == "per_document_ppl" else "answer NLL"
    fig = go.Figure(layout={**BASE_LAYOUT, "width": 520})
    fig.add_bar(x=[str(names[k]) if k < len(names) else str(k) for k in order], y=[diff[k] for k in order],
                name=f"searched − {name}", marker=dict(color=["#1a9850" if diff[k] < 0 else "#d73027" for k in order]))
    hline(fig, 0.0, "")
    wins = rep.wins.get(against, sum(d < 0 for d in diff) / max(1, len(diff)))
    fig.update_layout(title=f"Held-out: searched − {name} {unit} per window<br>(below 0 on {wins:.0%} of windows: "
                            "searched better)",
                      xaxis_title="held-out window (sorted)", yaxis_title=f"Δ {unit}", xaxis_showticklabels=False,
                      showlegend=False)
    return fig
