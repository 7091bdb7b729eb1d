"""Where a search run folder stands, read from its files alone (no model loaded, nothing evaluated): the best
candidate so far, what the search has cost, and the factor set it yields, its provenance written from those
files. A search need not have finished: a running or stopped one stands at its best journaled candidate."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..events import read_events
from ..runs import cpu_name, git
from .config import GRID, SearchError
from .journal import Journal, JournalError, Record
from .results import SearchResult
from .targets import TARGETS, seed_label


@dataclass
class Standing:
    """A search run folder as its files hold it."""

    folder: Path
    model: str
    config: dict[str, Any]
    documents: list[str]
    records: dict[str, Record]
    generations_done: int  # generations finished after the initial population (generation 0)
    result: SearchResult | None
    generations: list[dict[str, Any]] = field(default_factory=list)  # best and median per generation
    baselines: dict[str, float] = field(default_factory=dict)  # the seeds' fitness
    baseline_factors: dict[str, list[float]] = field(default_factory=dict)
    cpus: list[str] = field(default_factory=list)  # the CPUs its starts recorded (older starts did not)
    commits: list[str] = field(default_factory=list)  # the commits its starts ran
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.result is not None and not self.result.stopped

    @property
    def budget(self) -> int:
        c = self.config
        return c["population"] + c["generations"] * (c["mutants"] + c["crossovers"])

    @property
    def evaluations(self) -> int:
        return len(self.records)

    @property
    def tokens_forwarded(self) -> int:
        return sum(r.tokens for r in self.records.values())

    @property
    def seconds(self) -> float:
        """Seconds spent evaluating (the journal's per-candidate times; waits and restarts not counted)."""
        return sum(r.seconds for r in self.records.values())

    @property
    def best(self) -> Record | None:
        done = [r for r in self.records.values() if r.complete]
        return min(done, key=lambda r: r.fitness) if done else None

    def best_factors(self) -> list[float]:
        if self.finished:
            return list(self.result.best_factors)
        if self.best is None:
            raise SearchError(f"{self.folder} holds no complete evaluation yet: there is no best candidate")
        if self.best.cd is not None:
            from ..rope import longrope2_factors

            n_pairs = len(self.best.genome) + self.best.cd  # the genome holds the pairs from cd up
            return list(longrope2_factors([g / GRID for g in self.best.genome], self.best.cd, n_pairs))
        return [g / GRID for g in self.best.genome]

    def best_spec(self) -> Any:
        """The winner's spec (finished), or the best journaled candidate's, as the search would write it."""
        from ..rope import spec_from_dict

        if self.finished:
            return spec_from_dict(self.result.spec)
        from ..hf import spec_for_model
        from ..models import load_model_config

        geometry = spec_for_model(load_model_config(self.model), "default")
        geom = {k: getattr(geometry, k) for k in ("head_dim", "rope_theta", "original_max_position_embeddings")}
        target = TARGETS[self.config["mode"]](geom, self.config["target_length"], self.config["attention_policy"])
        return target.spec(self.best_factors(), self.best.n_hat, self.best.cd)

    def user_seed_labels(self) -> list[str]:
        """A label per user seed (``--factors``): "NAME seed" for a seed file shipped with the package
        (``workbench/assets/seeds/NAME.json``) whose factors it is, else "user seed 1", "user seed 2", ..."""
        return user_seed_labels(self.config.get("user_seeds", []))

    def user_seed_fitness(self) -> dict[str, float]:
        """The fitness of each user seed the journal holds, by its label (:meth:`user_seed_labels`): the seed on the
        0.01 grid, found among the evaluations (a seed the grid's bounds changed is not shown)."""
        by_genome = {tuple(r.genome): r for r in self.records.values() if r.complete and r.cd is None}
        out = {}
        for label, seed in zip(self.user_seed_labels(), self.config.get("user_seeds", []), strict=True):
            rec = by_genome.get(tuple(round(f * GRID) for f in seed))
            if rec is not None:
                out[label] = rec.fitness
        return out

    def summary(self) -> str:
        best = self.best
        state = "finished" if self.finished else f"{self.generations_done} of {self.config['generations']} generations"
        return (f"{self.model} to {self.config['target_length']} tokens, {state}; "
                f"{self.evaluations} of {self.budget} evaluations, {self.tokens_forwarded:,} token-forwards, "
                f"{self.seconds / 3600:.1f} h evaluating; best PPL "
                + (f"{best.fitness:.4f} (generation {best.generation})" if best else "none yet"))

    def markdown(self) -> str:
        """The best (so far, while unfinished) against the seeds, on the search's train window(s)."""
        rows = ["| search split | PPL |", "|---|---|"]
        if self.best is not None:
            best = "best" if self.finished else "best so far"
            rows.append(f"| {best} (generation {self.best.generation}) | {self.best.fitness:.3f} |")
        rows += [f"| {seed_label(k)} | {v:.3f} |" for k, v in self.baselines.items()]
        return "\n".join(rows + [f"| {k} | {v:.3f} |" for k, v in self.user_seed_fitness().items()])

    def figures(self) -> list[Any]:
        """Best and median per generation against the seeds, and the best factor curve against theirs."""
        from .results import search_factors_figure, search_progress_figure

        best = self.best_factors() if self.best is not None else []
        return [search_progress_figure(self.generations, self.baselines),
                search_factors_figure(best, [], self.baseline_factors)]

    def to_dict(self) -> dict[str, Any]:
        """What a notebook's results.json says of a search it watched: its standing and its provenance."""
        return {**self.provenance(), "baselines": self.baselines, "user_seeds": self.user_seed_fitness(),
                "best_factors": self.best_factors() if self.best is not None else [],
                "generations": [{k: g[k] for k in ("generation", "best", "median")} for g in self.generations]}

    def provenance(self) -> dict[str, Any]:
        """What the search was and what it cost, from its files (the commit and the exporting CPU added)."""
        c = self.config
        return {"run_folder": str(self.folder), "model": self.model, "finished": self.finished,
                "target_length": c["target_length"], "dtype": c["dtype"], "corpus": c["corpus"],
                "documents": self.documents, "budget": {k: c[k] for k in ("population", "parents", "mutants",
                                                                          "crossovers", "generations", "max_factor")},
                "seeds": list(c["seed_methods"]) + self.user_seed_labels(),
                "evaluations": self.evaluations, "budget_evaluations": self.budget,
                "generations_done": self.generations_done, "token_forwards": self.tokens_forwarded,
                "evaluation_hours": round(self.seconds / 3600, 2), "best_fitness": self.best.fitness if self.best
                else math.inf, "cpu": self.cpus or [f"{cpu_name()} (the exporting machine; the search's starts "
                                                    "did not record theirs)"],
                "versions": self.versions, "commits_of_starts": self.commits,
                "commit_of_export": git("rev-parse", "HEAD") or "unknown"}

    def factor_set(self, name: str, description: str = "") -> Any:
        """The best spec as a :class:`~workbench.factors.FactorSet` with :meth:`provenance`."""
        from ..factors import FactorSet

        what = "searched" if self.finished else "best so far of an unfinished search"
        text = description or (f"LongRoPE factors for {self.model} at {self.config['target_length']} tokens, {what} "
                               f"({self.evaluations} evaluations on the train split, {self.config['dtype']})")
        return FactorSet(name, self.model, text, self.best_spec(), self.provenance())


SHIPPED_RUNS = Path(__file__).resolve().parents[1] / "assets" / "runs"
SHIPPED_SEEDS = Path(__file__).resolve().parents[1] / "assets" / "seeds"


def _seed_key(factors: Any) -> tuple[float, ...]:
    return tuple(round(float(f), 9) for f in factors)


@functools.cache
def _shipped_seeds() -> dict[tuple[float, ...], str]:
    """The shipped seed files' factors (to 1e-9) and their names, read once."""
    shipped: dict[tuple[float, ...], str] = {}
    for path in sorted(SHIPPED_SEEDS.glob("*.json")):
        shipped.setdefault(_seed_key(json.loads(path.read_text())), path.stem)
    return shipped


def user_seed_labels(seeds: list[list[float]] | tuple[tuple[float, ...], ...]) -> list[str]:
    """Each seed's label: "NAME seed" where it equals a shipped seed file ``NAME.json`` (to 1e-9), else
    "user seed i" (1-based)."""
    shipped = _shipped_seeds()
    keys = [_seed_key(seed) for seed in seeds]
    return [f"{shipped[k]} seed" if k in shipped else f"user seed {i + 1}" for i, k in enumerate(keys)]


def whole_search(events: list[Any]) -> list[Any]:
    """The events that tell a search run folder's whole search: a resumed search replays its journal after its
    start, so from its last start on, or from the one before while the last has not replayed a generation yet
    (a folder read just after a restart)."""
    starts = [i for i, e in enumerate(events) if e.kind == "search.start"]
    replayed = [i for i in starts if any(e.kind == "search.generation" for e in events[i:])]
    return events[replayed[-1] if replayed else (starts[-1] if starts else 0):]


def shipped_runs() -> list[str]:
    """The search run folders shipped with the package (``workbench/assets/runs/<name>``), by name."""
    return sorted(p.name for p in SHIPPED_RUNS.iterdir() if (p / "params.json").is_file()) if SHIPPED_RUNS.is_dir() \
        else []


def read_standing(folder: str | Path) -> Standing:
    """The standing of the search in ``folder``: a run folder, or the name of one shipped with the package
    (:func:`shipped_runs`, e.g. "smollm2-32k").

    Raises:
        SearchError: the folder holds no search (no params.json of kind search) or its journal is damaged.
    """
    folder = Path(folder)
    if not folder.is_dir() and str(folder) in shipped_runs():
        folder = SHIPPED_RUNS / str(folder)
    try:
        params = json.loads((folder / "params.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise SearchError(f"{folder} holds no search run: no readable params.json (shipped runs: "
                          f"{', '.join(shipped_runs()) or 'none'})") from None
    if params.get("kind") != "search":
        raise SearchError(f"{folder} holds a run of kind {params.get('kind')!r}, not a search")
    try:
        journal = Journal.read(folder, repair=False)
    except JournalError as e:
        raise SearchError(str(e)) from None
    identity = params["identity"]
    events = read_events(folder / "events.jsonl")
    recorded = {key: list(dict.fromkeys(e.data[key] for e in events if e.kind == "search.start" and key in e.data))
                for key in ("cpu", "commit")}
    whole = whole_search(events)
    generations = {e.data["generation"]: e.data for e in whole if e.kind == "search.generation"}
    seeds = [e.data for e in whole if e.kind == "search.baselines"]
    return Standing(folder, identity["model"], identity["config"], list(identity.get("documents", [])),
                    journal.records, max((g for _, g in journal.generations), default=0), SearchResult.read(folder),
                    [generations[k] for k in sorted(generations)], {k: v for s in seeds for k, v in s["fitness"].items()},
                    {k: v for s in seeds for k, v in s["factors"].items()}, recorded["cpu"], recorded["commit"],
                    params.get("versions", {}))


__all__ = ["SHIPPED_RUNS", "Standing", "read_standing", "shipped_runs", "whole_search"]
