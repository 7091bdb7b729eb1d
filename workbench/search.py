"""Evolutionary search for LongRoPE and LongRoPE2 rescale factors (SPEC sections 2 and 3).

The genetic algorithm is pure and seeded: given the same seed and the same evaluations it proposes
the same candidates. That makes resuming exact: every finished evaluation is appended to a journal
in the run folder as it completes, and a resumed search re-runs the algorithm from the start,
reading evaluations from the journal instead of recomputing them, so it ends with exactly the result
of an uninterrupted run.

Genome: per-pair factors on a 0.01 grid (stored as integers in hundredths), non-decreasing, in
``[1, max_factor]`` (LongRoPE), or only the pairs from the critical dimension up, strictly increasing
in ``[s, max_factor]`` with an NTK shape below (LongRoPE2); plus ``n_hat``, searched in a final stage
for the best few individuals.

Fitness: perplexity on the *train* split at the target length (LongRoPE), or needle-driven perplexity
(LongRoPE2). Racing: a candidate is evaluated document by document and stopped once it cannot enter
the parent set even if every remaining document reached the best loss any candidate has reached on
it so far (an optimistic bound; switch racing off to reproduce the plain algorithm).

Scale-out: with ``torch.distributed`` initialised (``accelerate launch`` / ``torchrun``) every rank holds
a model replica and evaluates its share of each batch of candidates; rank 0 runs the algorithm and
every rank journals what it evaluated.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .evaluate import token_nll
from .events import Event, Sink, fan_out, null_sink
from .hf import NotExpressibleError, model_geometry, spec_for_model, to_hf
from .patch import patch
from .rope import (
    LongRope2Spec,
    LongRopeSpec,
    RopeSpec,
    critical_dimension,
    longrope2_factors,
    make_spec,
)

N_HAT_CHOICES = (0, 1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 64, 128, 256)
GRID = 100  # factors are integers in hundredths: the 0.01 grid
MODES = ("longrope", "longrope2")


class SearchError(ValueError):
    """A search cannot start or resume: the message says what is wrong and what is allowed."""


# ---- configuration -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchConfig:
    """Every parameter of a search (SPEC defaults); all of them must match to resume a run folder.

    Args:
        max_factor: upper bound of the factors: "1+s" (the authors' code), "1.25s" (the paper's
            table) or a number >= s.
        seed_methods: baselines seeded into the first population (and any ``user_seeds``).
        n_hat_stage: after the factor search, try ``n_hat_choices`` for the ``n_hat_top`` best.
        critical_dim / critical_dim_span: LongRoPE2's critical pair (None: theoretical) and an optional
            outer search over ``cd - span .. cd + span`` (each with the full inner budget).
        n_documents, per_document: fitness documents (train split) and windows taken per document.
        racing: stop hopeless candidates early (False: the plain algorithm).
    """

    target_length: int
    mode: str = "longrope"
    population: int = 64
    parents: int = 32
    mutants: int = 16
    crossovers: int = 16
    generations: int = 40
    mutation_p: float = 0.3
    crossover_p: float = 0.15
    max_factor: str | float = "1+s"
    seed_methods: tuple[str, ...] = ("linear", "ntk", "yarn")
    user_seeds: tuple[tuple[float, ...], ...] = ()
    n_hat_stage: bool = True
    n_hat_top: int = 4
    n_hat_choices: tuple[int, ...] = N_HAT_CHOICES
    critical_dim: int | None = None
    critical_dim_span: int = 0
    corpus: str = "shakespeare"
    n_documents: int = 3
    per_document: int = 2
    n_needles: int = 3
    racing: bool = True
    attention_policy: str = "su"
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> None:
            raise SearchError(f"{name}={getattr(self, name)!r} is not allowed: {allowed}")

        from .data import SOURCES
        from .rope.base import MAX_TARGET_LENGTH

        t = self.target_length
        if isinstance(t, bool) or not isinstance(t, int) or not 2 <= t <= MAX_TARGET_LENGTH:
            bad("target_length", f"an integer in [2, {MAX_TARGET_LENGTH}] (tokens; above the model's L0)")
        if self.mode not in MODES:
            bad("mode", f"one of {MODES}")
        if self.corpus not in SOURCES:
            bad("corpus", f"one of {tuple(SOURCES)}")
        if self.attention_policy == "constant":
            bad("attention_policy", "'su' or 'yarn': 'constant' needs a fixed attention_factor, which a search does "
                                    "not carry (the factor follows s)")
        if self.attention_policy not in ("su", "yarn"):
            bad("attention_policy", "'su' (sqrt(1 + ln s / ln L0)) or 'yarn' (0.1 ln s + 1)")
        if self.critical_dim is not None and (isinstance(self.critical_dim, bool) or not isinstance(
                self.critical_dim, int) or self.critical_dim < 1):
            bad("critical_dim", "None (the theoretical one) or a pair index >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            bad("seed", "an integer >= 0")
        for name in ("population", "parents", "generations", "n_documents", "per_document", "n_needles"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "generations" else 1):
                bad(name, "a positive integer" if name != "generations" else "an integer >= 0")
        if self.parents < 2:
            bad("parents", "at least 2 (crossover needs two distinct parents)")
        if self.population < self.parents:
            bad("population", f"at least parents={self.parents} (the first parents come from the population)")
        for name in ("mutants", "crossovers", "n_hat_top", "critical_dim_span"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(name, "an integer >= 0")
        if self.mutants + self.crossovers < 1 and self.generations > 0:
            bad("mutants", "mutants + crossovers >= 1 when generations > 0")
        for name in ("mutation_p", "crossover_p"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                bad(name, "a probability in [0, 1]")
        if isinstance(self.max_factor, str) and self.max_factor not in ("1+s", "1.25s"):
            bad("max_factor", "'1+s', '1.25s' or a number >= s")
        if not isinstance(self.max_factor, str) and not (
                isinstance(self.max_factor, (int, float)) and not isinstance(self.max_factor, bool)
                and math.isfinite(self.max_factor) and self.max_factor >= 1):
            bad("max_factor", "'1+s', '1.25s' or a finite number >= s")
        for i, seed_factors in enumerate(self.user_seeds):
            try:
                ok = len(seed_factors) > 0 and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
                    for x in seed_factors)
            except TypeError:
                ok = False
            if not ok:
                raise SearchError(f"user_seeds[{i}]={seed_factors!r} is not allowed: a list of finite factors > 0")
        unknown = set(self.seed_methods) - {"linear", "ntk", "yarn"}
        if unknown:
            bad("seed_methods", "a subset of ('linear', 'ntk', 'yarn')")
        if any(c < 0 for c in self.n_hat_choices) or 0 not in self.n_hat_choices:
            bad("n_hat_choices", "non-negative integers including 0")
        object.__setattr__(self, "user_seeds", tuple(tuple(float(x) for x in s) for s in self.user_seeds))
        object.__setattr__(self, "seed_methods", tuple(self.seed_methods))
        object.__setattr__(self, "n_hat_choices", tuple(sorted(set(self.n_hat_choices))))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @property
    def evaluations_budget(self) -> int:
        """Candidates of the factor search: the population plus every generation's children."""
        return (self.population + self.generations * (self.mutants + self.crossovers)) * (
            2 * self.critical_dim_span + 1 if self.mode == "longrope2" else 1)


# ---- the genetic algorithm (pure) ---------------------------------------------------------------
Genome = tuple[int, ...]


@dataclass(frozen=True)
class Space:
    """Where genomes live: the pairs searched, their bounds and monotonicity."""

    n_pairs: int
    s: float
    max_grid: int  # max_factor in hundredths
    cd: int | None = None  # LongRoPE2: genome = pairs cd..D-1, strictly increasing, >= s

    @property
    def length(self) -> int:
        return self.n_pairs - (self.cd or 0)

    @property
    def low(self) -> int:
        return math.ceil(round(self.s * GRID, 6)) if self.cd is not None else GRID

    @property
    def step(self) -> int:
        return 1 if self.cd is not None else 0  # strict increase for LongRoPE2

    def valid(self, g: Genome) -> bool:
        if len(g) != self.length or g[0] < self.low or g[-1] > self.max_grid:
            return False
        return all(b - a >= self.step for a, b in zip(g, g[1:], strict=False))

    def factors(self, g: Genome) -> tuple[float, ...]:
        """The full per-pair factor list of a genome."""
        upper = [x / GRID for x in g]
        if self.cd is None:
            return tuple(upper)
        return longrope2_factors(upper, self.cd, self.n_pairs)

    def project(self, factors: Sequence[float]) -> Genome:
        """Nearest valid genome to a full factor list (grid, bounds, monotonicity; LongRoPE2: pairs >= cd)."""
        vals = [min(max(round(f * GRID), GRID), self.max_grid) for f in factors][(self.cd or 0):]
        out: list[int] = []
        for v in vals:
            v = max(v, self.low if not out else out[-1] + self.step)
            out.append(v)
        if out[-1] > self.max_grid:  # squeezed against the top: fill downwards
            out[-1] = self.max_grid
            for i in range(len(out) - 2, -1, -1):
                out[i] = min(out[i], out[i + 1] - self.step)
        return tuple(out)


class GeneticAlgorithm:
    """Proposes candidates; knows nothing about models (deterministic for a seed)."""

    def __init__(self, space: Space, config: SearchConfig, seed_offset: int = 0) -> None:
        self.space, self.cfg = space, config
        self.rng = random.Random(config.seed * 1_000_003 + seed_offset)

    def mutate(self, parent: Genome, seen: set) -> Genome:
        """Each gene resampled with p on the grid between its (already mutated) neighbours; retried until new."""
        sp = self.space
        for _ in range(1000):
            child = list(parent)
            for i in range(len(child)):
                if self.rng.random() >= self.cfg.mutation_p:
                    continue
                lo = sp.low if i == 0 else child[i - 1] + sp.step
                hi = sp.max_grid if i == len(child) - 1 else child[i + 1] - sp.step
                if lo <= hi:
                    child[i] = self.rng.randint(lo, hi)
            g = tuple(child)
            if g not in seen and sp.valid(g):
                return g
        raise SearchError("mutation found no new valid genome in 1000 tries: the search space is exhausted")

    def crossover(self, better: Genome, other: Genome, seen: set) -> Genome:
        """Start from the better parent, take each gene from the other with p; 20 tries, else mutate."""
        for _ in range(20):
            child = tuple(o if self.rng.random() < self.cfg.crossover_p else b
                          for b, o in zip(better, other, strict=True))
            if child not in seen and self.space.valid(child):
                return child
        return self.mutate(better, seen)

    def children(self, parents: list[Genome], seen: set) -> list[Genome]:
        """``mutants`` mutations of random parents, then ``crossovers`` crossovers of distinct parent pairs."""
        out: list[Genome] = []
        taken = set(seen)
        for _ in range(self.cfg.mutants):
            g = self.mutate(self.rng.choice(parents), taken)
            taken.add(g)
            out.append(g)
        for _ in range(self.cfg.crossovers):
            i, j = sorted(self.rng.sample(range(len(parents)), 2))  # parents are ranked: i is the better
            g = self.crossover(parents[i], parents[j], taken)
            taken.add(g)
            out.append(g)
        return out


# ---- what a genome means ---------------------------------------------------------------------------
class LongTarget:
    """Genome = long factors for ``target_length`` (on top of ``base_factors`` a fine-tuned model already
    carries, for progressive stage 2: the composed factor is the product, SPEC section 4)."""

    kind = "long"

    def __init__(self, geometry: dict[str, Any], target_length: int, attention_policy: str = "su",
                 base_factors: Sequence[float] | None = None, base_length: int | None = None,
                 short_factor: Sequence[float] | None = None) -> None:
        self.geometry = geometry
        self.L0 = geometry["original_max_position_embeddings"]
        self.base_length = base_length or self.L0
        self.base = tuple(base_factors) if base_factors is not None else None
        self.short = tuple(short_factor) if short_factor is not None else None
        self.target_length, self.policy = target_length, attention_policy
        if target_length <= self.base_length:
            what = "the length the model already handles" if base_length else "the model's original context L0"
            raise SearchError(f"target_length={target_length} is not allowed: it must be above {what} "
                              f"{'L1' if base_length else 'L0'}={self.base_length}")
        self.s = target_length / self.base_length

    def seeds(self, methods: Sequence[str]) -> list[tuple[str, list[float]]]:
        """PI / NTK / YaRN relative to what the model handles (``base_length`` with ``base_factors``)."""
        out = []
        for m in methods:
            spec = make_spec(m, head_dim=self.geometry["head_dim"], rope_theta=self.geometry["rope_theta"],
                             original_max_position_embeddings=self.base_length, factor=self.s)
            out.append((m, (spec.original_inv_freq().double() / spec.frequencies().inv_freq.double()).tolist()))
        return out

    def spec(self, factors: Sequence[float], n_hat: int, cd: int | None) -> RopeSpec:
        long = [f * b for f, b in zip(factors, self.base, strict=True)] if self.base else list(factors)
        common = dict(**self.geometry, factor=self.target_length / self.L0, long_factor=long, n_hat=n_hat,
                      attention_policy=self.policy, short_factor=self.short)
        if cd is not None:
            return LongRope2Spec(**common, critical_dim=cd)
        return LongRopeSpec(**common)

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "base_factors": list(self.base) if self.base else None,
                "base_length": self.base_length, "short_factor": list(self.short) if self.short else None}


class ShortTarget:
    """Genome = short factors (short-context recovery, SPEC section 4): evaluated at L0, where they apply,
    with the model's long factors fixed."""

    kind = "short"

    def __init__(self, geometry: dict[str, Any], long_factor: Sequence[float], factor: float,
                 attention_policy: str = "su") -> None:
        self.geometry, self.long, self.factor, self.policy = geometry, tuple(long_factor), factor, attention_policy
        self.L0 = geometry["original_max_position_embeddings"]
        self.s = 1.0

    def seeds(self, methods: Sequence[str]) -> list[tuple[str, list[float]]]:
        ones = [1.0] * len(self.long)
        return [("original", ones), ("long factors", list(self.long)),
                ("geometric mean", [math.sqrt(x) for x in self.long])]

    def spec(self, factors: Sequence[float], n_hat: int, cd: int | None) -> RopeSpec:
        return LongRopeSpec(**self.geometry, factor=self.factor, long_factor=self.long, short_factor=tuple(factors),
                            n_hat=n_hat, attention_policy=self.policy, enforce_monotone=False)

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "long_factor": list(self.long), "factor": self.factor}


# ---- evaluation ---------------------------------------------------------------------------------
@dataclass
class Record:
    """One evaluation: per-document losses (all of them, or the first few if racing stopped it)."""

    key: str
    cd: int | None
    genome: list[int]
    n_hat: int
    nll: list[float]
    complete: bool
    tokens: int
    stage: str  # "init", "generation", "n_hat"
    generation: int
    seconds: float = 0.0
    replayed: bool = False

    @property
    def fitness(self) -> float:
        """exp(mean per-document loss), inf if racing stopped it."""
        return math.exp(sum(self.nll) / len(self.nll)) if self.complete and self.nll else math.inf

    def journal_entry(self) -> dict[str, Any]:
        return {"kind": "eval", **{k: v for k, v in asdict(self).items() if k != "replayed"}}


def candidate_key(cd: int | None, genome: Genome, n_hat: int) -> str:
    return f"{cd if cd is not None else '-'}|{n_hat}|" + ",".join(map(str, genome))


@dataclass
class Threshold:
    """What a candidate must beat to enter the parent set: the worst parent's per-document losses."""

    nll: list[float]  # per document
    floor: list[float]  # best loss any complete candidate reached on each document


def hopeless(partial: list[float], threshold: Threshold | None) -> bool:
    """True when the candidate cannot beat the threshold even if its remaining documents reached the floor."""
    if threshold is None:
        return False
    k = len(partial)
    deficit = sum(partial) - sum(threshold.nll[:k])
    slack = sum(t - f for t, f in zip(threshold.nll[k:], threshold.floor[k:], strict=True))
    return deficit > slack


class Evaluator:
    """Turns a genome into a spec (through the target) and measures its per-document loss."""

    def __init__(self, model: Any, docs: list[Any], target: LongTarget | ShortTarget, config: SearchConfig) -> None:
        self.model, self.docs, self.target, self.cfg = model, docs, target, config

    def spec(self, space: Space, genome: Genome, n_hat: int) -> RopeSpec:
        return self.target.spec(space.factors(genome), n_hat, space.cd)

    def doc_nll(self, doc: Any) -> float:
        if self.cfg.mode == "longrope2":  # needle-driven: the answer's tokens only
            nll = token_nll(self.model, doc.tokens[None], score_from=doc.answer_start - 1)[: doc.answer_len]
        else:
            nll = token_nll(self.model, doc.tokens[None])
        return float(nll.mean())

    def evaluate(self, space: Space, genome: Genome, n_hat: int, threshold: Threshold | None,
                 stop: Callable[[], bool] = lambda: False) -> tuple[list[float], bool]:
        """Per-document losses; stops early when ``hopeless`` (racing) — returns (losses, complete)."""
        losses: list[float] = []
        with patch(self.model, self.spec(space, genome, n_hat)):
            for doc in self.docs:
                losses.append(self.doc_nll(doc))
                if len(losses) < len(self.docs) and (hopeless(losses, threshold) or stop()):
                    return losses, False
        return losses, True


# ---- the run: journal, resume, distribution ----------------------------------------------------
class JournalError(SearchError):
    """A journal line was changed after it was written, or is not a journal entry: resuming from it is refused."""


def _line_checksum(entry: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class JournalContents:
    """What a run folder's journals hold: evaluations by key, the generations already journaled, and notes."""

    records: dict[str, Record]
    generations: set[tuple[int | None, int]]
    warnings: list[str]


class Journal:
    """Append-only JSONL of finished evaluations (one file per rank) plus generation summaries.

    Every line carries a checksum of its content, so a line edited by hand (or damaged on disk) is refused on
    resume rather than trusted. It catches edits and damage, not a forger who recomputes the checksum.
    A line torn by a killed write can only be the last one: reading cuts it off, so the next append starts on
    a clean line.
    """

    def __init__(self, folder: Path, rank: int = 0) -> None:
        self.folder = folder
        self.path = folder / f"journal-{rank}.jsonl"

    def append(self, entry: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({**entry, "sha": _line_checksum(entry)}) + "\n")
            f.flush()

    @staticmethod
    def read(folder: Path) -> JournalContents:
        """Every rank's journal; a torn last line is cut off (with a warning), anything else wrong is refused.

        Raises:
            JournalError: a line that is not JSON before the last, a line that is not a journal entry, or a
                line whose checksum does not match its content.
        """
        out = JournalContents({}, set(), [])
        for path in sorted(folder.glob("journal-*.jsonl")):
            Journal._read_file(path, out)
        return out

    @staticmethod
    def _read_file(path: Path, out: JournalContents) -> None:
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        good = 0  # characters of whole, valid lines
        for i, raw in enumerate(lines, 1):
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                if i < len(lines):
                    raise JournalError(f"{path} line {i} is not JSON, and it is not the last line, so it is not a "
                                       "torn write: the journal is damaged; start a new run folder") from None
                path.write_text(text[:good], encoding="utf-8")
                out.warnings.append(f"{path.name} line {i} was torn by a killed write; cut it off and kept the "
                                    f"{len(out.records)} evaluations before it")
                return
            Journal._check(path, i, entry)
            if entry["kind"] == "eval":
                entry.pop("kind")
                try:
                    rec = Record(**entry, replayed=True)
                except TypeError as e:
                    raise JournalError(f"{path} line {i} is not an evaluation record ({e})") from None
                out.records[rec.key] = rec
            else:
                out.generations.add((entry.get("critical_dim"), entry.get("generation")))
            good += len(raw)
        if text and not text.endswith("\n"):  # a whole last line without its newline: the next append needs one
            with path.open("a", encoding="utf-8") as f:
                f.write("\n")

    @staticmethod
    def _check(path: Path, i: int, entry: Any) -> None:
        if not isinstance(entry, dict) or entry.get("kind") not in ("eval", "generation"):
            raise JournalError(f"{path} line {i} is not a journal entry (an object whose kind is eval or generation)")
        sha = entry.pop("sha", None)
        if sha != _line_checksum(entry):
            raise JournalError(f"{path} line {i} was changed after it was written (its checksum does not match): "
                               "refusing to resume from it; start a new run folder or restore the journal")


def model_fingerprint(model: Any) -> str:
    """A short hash of a model's config and a slice of its weights: resuming on another model is refused."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    emb = model.get_input_embeddings().weight
    h.update(emb.detach().flatten()[:4096].float().cpu().numpy().tobytes())  # .cpu(): a model on a GPU too
    return h.hexdigest()[:16]


@dataclass
class SearchResult:
    """The winner and how the search got there."""

    best_factors: list[float]
    best_n_hat: int
    best_fitness: float
    critical_dim: int | None
    spec: dict[str, Any]
    rope_parameters: dict[str, Any] | None
    export_notes: list[str]
    baselines: dict[str, float]  # fitness of the seeded PI / NTK / YaRN on the search documents
    generations: list[dict[str, Any]]
    evaluations: int
    evaluations_replayed: int
    tokens_forwarded: int
    tokens_saved_by_racing: int
    seconds: float
    stopped: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Comm:
    """Distributes evaluation batches over ranks (torch.distributed), or runs them locally."""

    def __init__(self) -> None:
        dist = torch.distributed
        self.active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1

    def broadcast(self, obj: Any) -> Any:
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world if self.rank == 0 else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out


class Search:
    """A search bound to a model, its fitness documents and a run folder.

    Create it on every rank (each with its own model replica); call :meth:`run` on every rank. Rank 0
    drives the algorithm and returns the :class:`SearchResult`; other ranks return None.
    """

    def __init__(self, model: Any, tokenizer: Any, config: SearchConfig, run_dir: str | Path, *,
                 sink: Sink = null_sink, stop: Callable[[], bool] = lambda: False, resume: bool = False,
                 model_name: str = "model", target: LongTarget | ShortTarget | None = None) -> None:
        from .data import needle_samples, samples

        geometry = model_geometry(model)
        L0 = geometry.original_max_position_embeddings
        geom = dict(head_dim=geometry.head_dim, rope_theta=geometry.rope_theta, original_max_position_embeddings=L0)
        if target is None:
            if config.target_length <= L0:
                raise SearchError(f"target_length={config.target_length} is not allowed: it must be above the model's "
                                  f"original context L0={L0}")
            target = LongTarget(geom, config.target_length, config.attention_policy)
        if isinstance(target, ShortTarget) and config.target_length > L0:
            raise SearchError(f"target_length={config.target_length} is not allowed for short factors: they apply up "
                              f"to L0={L0}")
        if (isinstance(target, ShortTarget) or target.base) and config.mode != "longrope":
            raise SearchError("mode='longrope2' is not allowed for short-factor or composed (stage-2) searches")
        self.target = target
        s = target.s
        max_factor = {"1+s": 1 + s, "1.25s": 1.25 * s}.get(config.max_factor, config.max_factor)  # type: ignore[arg-type]
        if not isinstance(max_factor, (int, float)) or max_factor < s:
            raise SearchError(f"max_factor={config.max_factor!r} is not allowed: the maximum factor must be at least "
                              f"the extension ratio s={s:g} (use '1+s', '1.25s' or a number >= s)")
        self.model, self.tokenizer, self.cfg = model, tokenizer, config
        self.geometry = geom
        self.s, self.max_grid = s, int(math.floor(max_factor * GRID + 1e-9))
        self.n_pairs = geometry.head_dim // 2
        # everything the model decides is checked here, before the documents are read or the folder written
        for i, factors in enumerate(config.user_seeds):
            if len(factors) != self.n_pairs:
                raise SearchError(f"user_seeds[{i}] has {len(factors)} factors (--factors); the model has "
                                  f"{self.n_pairs} frequency pairs (head_dim {geometry.head_dim}): give {self.n_pairs}")
        if config.mode == "longrope2" and config.critical_dim is not None and not (
                1 <= config.critical_dim - config.critical_dim_span
                and config.critical_dim + config.critical_dim_span <= self.n_pairs - 2):
            raise SearchError(f"critical_dim={config.critical_dim} (span {config.critical_dim_span}) is not allowed: "
                              f"the model has {self.n_pairs} frequency pairs, so critical_dim +- span must stay in "
                              f"[1, {self.n_pairs - 2}]")
        self.comm = _Comm()
        self.folder = Path(run_dir)
        self.sink = sink if self.comm.rank == 0 else null_sink
        self.stop = stop
        self.model_name = model_name
        if config.mode == "longrope2":
            docs = needle_samples(tokenizer, config.corpus, "train", config.target_length, config.n_documents,
                                  config.n_needles, seed=config.seed)
        else:
            docs = samples(tokenizer, config.corpus, "train", config.target_length, config.n_documents,
                           per_document=config.per_document, progress=False)
        self.docs = docs
        self.evaluator = Evaluator(model, docs, target, config)
        self.records: dict[str, Record] = {}  # every evaluation known, including the journal's
        self.journaled_generations: set[tuple[int | None, int]] = set()  # (critical_dim, generation) already journaled
        self.reached: dict[str, Record] = {}  # evaluations this run has reached so far, in order
        self.notes: list[str] = []
        self._prepare_folder(resume)
        self.journal = Journal(self.folder, self.comm.rank)
        self.replayed = 0

    @property
    def tokens(self) -> int:
        """Token-forwards spent on the evaluations reached (the same whether or not the run was resumed)."""
        return sum(r.tokens for r in self.reached.values())

    @property
    def tokens_saved(self) -> int:
        return sum((len(self.docs) - len(r.nll)) * self.cfg.target_length for r in self.reached.values())

    # -- run folder ----------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "model": self.model_name, "model_fingerprint": model_fingerprint(self.model),
                "target": self.target.identity(),
                "documents": [getattr(d, "label", None) or getattr(d, "key", "") for d in self.docs]}

    def _prepare_folder(self, resume: bool) -> None:
        from .runs import folder_kind, made_by, versions

        params = self.folder / "params.json"
        ident = self._identity()
        error = None
        if self.comm.rank == 0:
            held = folder_kind(self.folder)
            if held not in (None, "search"):
                error = (f"{self.folder} holds a run of kind {held!r} ({made_by(self.folder)}), not a search: choose another "
                         "run folder")
            elif params.exists() and not resume:
                error = (f"{self.folder} already holds a search; pass resume=True (--resume) to continue it, or "
                         "choose another run folder")
            elif params.exists():
                diffs = _differences(json.loads(params.read_text()).get("identity", {}), ident)
                if diffs:
                    error = f"cannot resume {self.folder}: it was made with different settings: " + "; ".join(diffs)
            elif resume and self.folder.exists() and any(self.folder.glob("journal-*.jsonl")):
                error = f"cannot resume {self.folder}: params.json is missing"
            elif resume:
                error = (f"cannot resume {self.folder}: "
                         + ("it does not exist" if not self.folder.exists() else "it holds no search (no params.json)")
                         + "; check the path, or drop resume (--resume) to start a new search there")
            else:
                self.folder.mkdir(parents=True, exist_ok=True)
                params.write_text(json.dumps({"kind": "search", "identity": ident, "versions": versions(),
                                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
        error = self.comm.broadcast(error)  # every rank waits for rank 0's folder check
        if error:
            raise SearchError(error)
        journal = Journal.read(self.folder) if resume else JournalContents({}, set(), [])
        self.records, self.journaled_generations = journal.records, journal.generations
        for w in journal.warnings:
            self.notes.append(w)
            self.sink(Event("search.warning", {"message": w}))

    # -- evaluation ------------------------------------------------------------------------------
    def _evaluate_batch(self, space: Space, batch: list[tuple[Genome, int]], threshold: Threshold | None,
                        stage: str, generation: int) -> list[Record]:
        """Evaluate (genome, n_hat) candidates, from the journal where possible; in order."""
        todo = []
        out: dict[str, Record] = {}
        for genome, n_hat in batch:
            key = candidate_key(space.cd, genome, n_hat)
            if key in self.records:
                out[key] = self.records[key]
            else:
                todo.append((genome, n_hat, key))
        stop_now = self.stop()
        job = self.comm.broadcast({"space": space, "todo": todo, "threshold": threshold, "stage": stage,
                                   "generation": generation, "stop": stop_now})
        mine = self._work(job)
        for part in self.comm.gather(mine):
            for rec in part or []:
                out[rec.key] = rec
        results = []
        for genome, n_hat in batch:
            key = candidate_key(space.cd, genome, n_hat)
            rec = out.get(key)
            if rec is None:  # stopped before it was evaluated
                continue
            self.records[key] = rec
            self.reached[key] = rec
            self.replayed += rec.replayed
            self.sink(Event("search.eval", {"key": key, "factors": list(space.factors(tuple(rec.genome))),
                                            "n_hat": rec.n_hat, "fitness": rec.fitness, "complete": rec.complete,
                                            "documents": len(rec.nll), "stage": stage, "generation": generation,
                                            "replayed": rec.replayed, "tokens_total": self.tokens,
                                            "seconds": rec.seconds}))
            results.append(rec)
        return results

    def _work(self, job: dict[str, Any]) -> list[Record]:
        """Evaluate this rank's share of a batch, journaling each as it finishes."""
        if job["stop"]:
            return []
        out = []
        for genome, n_hat, key in job["todo"][self.comm.rank::self.comm.world]:
            if self.comm.rank == 0 and self.stop():
                break
            t0 = time.time()
            nll, complete = self.evaluator.evaluate(job["space"], genome, n_hat, job["threshold"])
            rec = Record(key, job["space"].cd, list(genome), n_hat, nll, complete, len(nll) * self.cfg.target_length,
                         job["stage"], job["generation"], time.time() - t0)
            self.journal.append(rec.journal_entry())
            out.append(rec)
        return out

    def serve(self) -> None:
        """Non-zero ranks: evaluate batches until rank 0 says the search is over."""
        while True:
            job = self.comm.broadcast(None)
            if job is None or job == "done":
                return
            self.comm.gather(self._work(job))

    # -- the algorithm -----------------------------------------------------------------------------
    def _threshold(self, parents: list[Record], floor: list[float]) -> Threshold | None:
        if not self.cfg.racing or len(parents) < self.cfg.parents:
            return None
        return Threshold(list(parents[-1].nll), list(floor))

    @staticmethod
    def _floor(records: list[Record], n_docs: int) -> list[float]:
        complete = [r.nll for r in records if r.complete]
        return [min(r[j] for r in complete) for j in range(n_docs)] if complete else [0.0] * n_docs

    def _seeds(self, space: Space) -> list[tuple[str, Genome]]:
        seeds = [(name, space.project(f)) for name, f in self.target.seeds(self.cfg.seed_methods)]
        if space.cd is not None:
            # strict increase from s packs projected baselines into s, s+0.01, ...: seed spread ramps too
            top = space.max_grid / GRID
            for k in (1, 2, 3, 4):
                end = self.s + (top - self.s) * k / 4
                ramp = [1.0] * space.cd + [self.s + (end - self.s) * j / max(1, space.length - 1)
                                           for j in range(space.length)]
                seeds.append((f"ramp to {end:.2f}", space.project(ramp)))
        for i, factors in enumerate(self.cfg.user_seeds):
            if len(factors) != self.n_pairs:
                raise SearchError(f"user_seeds[{i}] has {len(factors)} factors; the model has {self.n_pairs} pairs")
            seeds.append((f"user{i}", space.project(factors)))
        unique: dict[Genome, str] = {}
        for name, g in seeds:
            unique.setdefault(g, name)
        return [(name, g) for g, name in unique.items()]

    def _search_space(self, space: Space, offset: int) -> tuple[list[Record], dict[str, float], list[dict]]:
        """The factor search in one space (one critical dimension): population, then generations."""
        cfg = self.cfg
        ga = GeneticAlgorithm(space, cfg, offset)
        seeds = self._seeds(space)
        population = [g for _, g in seeds]
        seen = set(population)
        i = 0
        while len(population) < cfg.population:  # fill with mutations of the seeds, in turn
            g = ga.mutate(population[i % len(seeds)], seen)
            seen.add(g)
            population.append(g)
            i += 1
        records = self._evaluate_batch(space, [(g, 0) for g in population], None, "init", 0)
        by_genome = {tuple(r.genome): r for r in records}
        named = ("linear", "ntk", "yarn", "original", "long factors")
        baselines = {name: by_genome[g].fitness for name, g in seeds if g in by_genome and name in named}
        self.sink(Event("search.baselines", {"critical_dim": space.cd, "fitness": baselines,
                                             "factors": {name: list(space.factors(g)) for name, g in seeds
                                                         if name in baselines}}))
        parents = sorted((r for r in records if r.complete), key=lambda r: r.fitness)[: cfg.parents]
        history = [self._generation_event(0, parents, records, space)]
        for gen in range(1, cfg.generations + 1):
            if self.stop() or not parents:
                break
            # only what this run has reached: on resume the journal also holds later generations
            seen = {tuple(r.genome) for r in self.reached.values() if r.cd == space.cd and r.n_hat == 0}
            children = ga.children([tuple(p.genome) for p in parents], seen)
            threshold = self._threshold(parents, self._floor(list(self.reached.values()), len(self.docs)))
            evaluated = self._evaluate_batch(space, [(g, 0) for g in children], threshold, "generation", gen)
            records += evaluated
            parents = sorted([*parents, *(r for r in evaluated if r.complete)], key=lambda r: r.fitness)[: cfg.parents]
            history.append(self._generation_event(gen, parents, evaluated, space))
        return parents, baselines, history

    def _generation_event(self, gen: int, parents: list[Record], evaluated: list[Record], space: Space) -> dict:
        fits = [p.fitness for p in parents]
        row = {"generation": gen, "critical_dim": space.cd, "best": fits[0] if fits else math.inf,
               "median": statistics.median(fits) if fits else math.inf,
               "best_factors": list(space.factors(tuple(parents[0].genome))) if parents else [],
               "parents": [p.key for p in parents], "evaluated": len(evaluated),
               "stopped_early": sum(not r.complete for r in evaluated), "tokens_total": self.tokens,
               "population_factors": [list(space.factors(tuple(p.genome))) for p in parents]}
        if self.comm.rank == 0 and (space.cd, gen) not in self.journaled_generations:  # once, also across resumes
            self.journal.append({"kind": "generation", **{k: v for k, v in row.items() if k != "population_factors"}})
            self.journaled_generations.add((space.cd, gen))
        self.sink(Event("search.generation", row))
        return row

    def run(self) -> SearchResult | None:
        """Run (or resume) the search; rank 0 returns the result, other ranks serve and return None.

        Raises:
            RunFolderError: another process is running a search in this folder (rank 0 holds its lock).
        """
        from .runs import RunFolderError, folder_lock

        if self.comm.rank != 0:
            self.serve()
            return None
        try:
            lock = folder_lock(self.folder, "a search")
            lock.__enter__()
        except RunFolderError:
            self.comm.broadcast("done")  # release the other ranks before refusing
            raise
        try:
            return self._run()
        finally:
            lock.__exit__(None, None, None)

    def _run(self) -> SearchResult:
        t0 = time.time()
        cfg = self.cfg
        try:
            self.sink(Event("search.start", {"config": cfg.to_dict(), "budget": cfg.evaluations_budget,
                                             "resumed_evaluations": len(self.records), "notes": self.notes}))
            spaces = [Space(self.n_pairs, self.s, self.max_grid)]
            if cfg.mode == "longrope2":
                cd0 = cfg.critical_dim if cfg.critical_dim is not None else critical_dimension(
                    self.geometry["head_dim"], self.geometry["rope_theta"],
                    self.geometry["original_max_position_embeddings"])
                cds = [c for c in range(cd0 - cfg.critical_dim_span, cd0 + cfg.critical_dim_span + 1)
                       if 1 <= c <= self.n_pairs - 2]
                spaces = [Space(self.n_pairs, self.s, self.max_grid, cd) for cd in cds]
                if any(math.ceil(round(self.s * GRID, 6)) + (self.n_pairs - cd - 1) > self.max_grid for cd in cds):
                    raise SearchError(f"max_factor too small for LongRoPE2: pairs >= critical_dim must increase strictly "
                                      f"from s={self.s:g} in steps of 0.01 and stay <= {self.max_grid / GRID:g}")
            best: tuple[Record, Space] | None = None
            baselines: dict[str, float] = {}
            history: list[dict] = []
            tops: list[tuple[Record, Space]] = []
            for k, space in enumerate(spaces):
                parents, base, hist = self._search_space(space, k)
                history += hist
                baselines = baselines or base
                tops += [(p, space) for p in parents]
            tops.sort(key=lambda t: t[0].fitness)
            if tops:
                best = tops[0]
            if best is not None and cfg.n_hat_stage and not self.stop():
                best = self._n_hat_stage(tops[: cfg.n_hat_top], best)
        finally:
            if self.comm.active:
                self.comm.broadcast("done")
        return self._result(best, baselines, history, time.time() - t0)

    def _n_hat_stage(self, tops: list[tuple[Record, Space]], best: tuple[Record, Space]) -> tuple[Record, Space]:
        choices = [n for n in self.cfg.n_hat_choices if 0 < n <= self.cfg.target_length]
        for rec, space in tops:
            threshold = Threshold(list(best[0].nll), self._floor(list(self.reached.values()), len(self.docs))) \
                if self.cfg.racing else None
            tried = self._evaluate_batch(space, [(tuple(rec.genome), n) for n in choices], threshold, "n_hat", -1)
            for r in tried:
                if r.fitness < best[0].fitness:
                    best = (r, space)
        self.sink(Event("search.n_hat", {"best_n_hat": best[0].n_hat, "best": best[0].fitness}))
        return best

    def _result(self, best: tuple[Record, Space] | None, baselines: dict[str, float], history: list[dict],
                seconds: float) -> SearchResult:
        stopped = self.stop()
        if best is None:
            result = SearchResult([], 0, math.inf, None, {}, None, [], baselines, history, len(self.reached),
                                  self.replayed, self.tokens, self.tokens_saved, seconds, stopped, self.notes)
        else:
            rec, space = best
            spec = self.evaluator.spec(space, tuple(rec.genome), rec.n_hat)
            notes: list[str] = []
            try:
                exp = to_hf(spec, allow_lossy=rec.n_hat > 0)
                rope_parameters, notes = exp.rope_parameters, list(exp.notes)
            except NotExpressibleError as e:
                rope_parameters, notes = None, [str(e)]
            result = SearchResult(list(space.factors(tuple(rec.genome))), rec.n_hat, rec.fitness, space.cd,
                                  spec.to_dict(), rope_parameters, notes, baselines,
                                  [{k: v for k, v in h.items() if k != "population_factors"} for h in history],
                                  len(self.reached), self.replayed, self.tokens, self.tokens_saved, seconds, stopped,
                                  self.notes)
        (self.folder / "result.json").write_text(json.dumps(result.to_dict(), indent=1, default=float))
        self.sink(Event("search.done", {k: v for k, v in result.to_dict().items() if k != "generations"}))
        return result


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {_short(a)} in the folder, {_short(b)} now")
    return out


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- the held-out report --------------------------------------------------------------------------
def heldout_report(model: Any, tokenizer: Any, result: SearchResult, config: SearchConfig, *, n_documents: int = 20,
                   per_document: int = 4, sink: Sink = null_sink, progress: bool = False) -> dict[str, Any]:
    """Re-evaluate the winner and PI / NTK / YaRN on the held-out split, per document (paired comparisons)."""
    from .data import needle_samples, samples
    from .evaluate import needle_perplexity, perplexity
    from .rope import spec_from_dict

    specs: dict[str, RopeSpec] = {"searched": spec_from_dict(result.spec)}
    for m in ("linear", "ntk", "yarn"):
        specs[m] = spec_for_model(model, m, target_length=config.target_length)
    out: dict[str, Any] = {"target_length": config.target_length, "mode": config.mode, "settings": {}}
    if config.mode == "longrope2":
        docs = needle_samples(tokenizer, config.corpus, "heldout", config.target_length, n_documents, config.n_needles,
                              seed=config.seed + 1)
        for name, spec in specs.items():
            r = needle_perplexity(model, docs, spec=spec, label=name, progress=progress, sink=sink)
            out["settings"][name] = {"ppl": r.ppl, "per_document_nll": r.per_document_nll}
        per_doc = {n: v["per_document_nll"] for n, v in out["settings"].items()}
    else:
        docs = samples(tokenizer, config.corpus, "heldout", config.target_length, n_documents,
                       per_document=per_document, progress=False)
        for name, spec in specs.items():
            r = perplexity(model, docs, spec=spec, label=name, progress=progress, sink=sink)
            out["settings"][name] = {"ppl": r.ppl, "tail_ppl": r.tail_ppl(), "per_document_ppl": r.per_document_ppl}
        per_doc = {n: v["per_document_ppl"] for n, v in out["settings"].items()}
    out["documents"] = [getattr(d, "label", None) or getattr(d, "key", "") for d in docs]
    for m in ("linear", "ntk", "yarn"):
        wins = sum(a < b for a, b in zip(per_doc["searched"], per_doc[m], strict=True))
        out[f"wins_vs_{m}"] = wins / len(docs)
        out[f"gain_vs_{m}"] = 1 - out["settings"]["searched"]["ppl"] / out["settings"][m]["ppl"]
        if "tail_ppl" in out["settings"]["searched"]:
            out[f"tail_gain_vs_{m}"] = 1 - out["settings"]["searched"]["tail_ppl"] / out["settings"][m]["tail_ppl"]
    return out


def run_search(model: Any, tokenizer: Any, config: SearchConfig, run_dir: str | Path, *, resume: bool = False,
               report: bool = True, sink: Sink = null_sink, stop: Callable[[], bool] = lambda: False,
               model_name: str = "model", report_documents: int = 20,
               target: LongTarget | ShortTarget | None = None) -> SearchResult | None:
    """Search, then (rank 0) the held-out report, written to ``run_dir/report.json``."""
    from .events import JsonlSink

    folder = Path(run_dir)
    jsonl: list[JsonlSink] = []

    def journal_events(event: Event) -> None:
        """events.jsonl, opened at the first event: a search refused by its checks leaves no folder behind."""
        if _rank() != 0:
            return
        if not jsonl:
            jsonl.append(JsonlSink(folder / "events.jsonl"))
        jsonl[0](event)

    both = fan_out([sink, journal_events])
    search = Search(model, tokenizer, config, folder, sink=both, stop=stop, resume=resume, model_name=model_name,
                    target=target)
    result = search.run()
    if result is not None and report and not result.stopped and result.best_factors and target is None:
        rep = heldout_report(model, tokenizer, result, config, n_documents=report_documents, sink=both)
        (folder / "report.json").write_text(json.dumps(rep, indent=1, default=float))
        both(Event("search.report", rep))
    return result


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
