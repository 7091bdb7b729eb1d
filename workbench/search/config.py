"""A search's parameters (every one must match to resume its run folder) and the named budgets."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..rope import methods_with

N_HAT_CHOICES = (0, 1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 64, 128, 256)
GRID = 100  # factors are integers in hundredths: the 0.01 grid
MODES = ("longrope", "longrope2")
RACING = ("exact", "heuristic", "off")
SEARCH_DTYPES = ("fp32", "bf16")
MAX_FACTORS = ("1+s", "1.25s", "2s")
DEFAULT_MAX_FACTOR = {"longrope": "1+s", "longrope2": "2s"}

PRESETS: dict[str, dict[str, Any]] = {
    "full": {},  # the defaults: population 64, 32 parents, 16 + 16 children, 40 generations
    "small": {"population": 16, "parents": 8, "mutants": 4, "crossovers": 4, "generations": 6, "n_hat_top": 2},
    # a real model on a CPU: 16 + 20 x 8 = 176 candidates, meant with --rungs (each read whole only if it earns it)
    "lean": {"population": 16, "parents": 8, "mutants": 4, "crossovers": 4, "generations": 20, "n_hat_top": 2},
    "tiny": {"population": 6, "parents": 3, "mutants": 2, "crossovers": 1, "generations": 2, "n_hat_top": 1,
             "n_hat_choices": (0, 4)},
}


class SearchError(ValueError):
    """A search cannot start or resume: the message says what is wrong and what is allowed."""


def _is_int(v: Any, low: int) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and v >= low


def _is_number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


@dataclass(frozen=True)
class SearchConfig:
    """Every parameter of a search (the paper's defaults); all of them must match to resume a run folder.

    Args:
        max_factor: upper bound of the factors: "1+s" (the authors' code; LongRoPE's default), "1.25s" (the
            paper's table), "2s" (LongRoPE2's default: its authors search up to about 2s for the pairs from the
            critical dimension up) or a number >= s; None: the mode's default.
        seed_methods: the methods whose frequency factors seed the first population (with any ``user_seeds``;
            default: every method with the role "seed", PI / NTK / YaRN); their fitness is reported as "seeds",
            evaluated with this search's attention factor, and the held-out report compares the searched factors
            with the methods themselves.
        n_hat_stage: after the factor search, try ``n_hat_choices`` for the ``n_hat_top`` best.
        critical_dim / critical_dim_span: LongRoPE2's critical pair (None: theoretical) and an optional
            outer search over ``cd - span .. cd + span`` (each with the full inner budget).
        n_documents, per_document: fitness documents (train split) and windows taken per document.
        racing: "exact" (default) stops a candidate once its losses so far already exceed the whole loss of
            what it must beat (a loss is never below 0), so the result is the plain algorithm's; "heuristic"
            also assumes each remaining document cannot go below the best loss any candidate reached on it, an
            optimistic guess that saves more but may drop a future parent; "off": every candidate on every
            document. ``True`` / ``False`` mean "exact" / "off".
        attention_policy: the searched spec's attention factor as s grows: "su" or "yarn".
        dtype: "fp32" or "bf16" (autocast; on CPUs with AVX512-BF16 or AMX and on GPUs several times faster,
            perplexities within about 0.1 %). Part of the identity: a search never mixes the two.
        chunk_tokens: documents are read through a KV cache this many tokens at a time; racing judges a
            candidate after every chunk.
        rungs: multi-fidelity (successive halving on prefix length, a heuristic, off by default): every
            candidate of a batch is read to ``rungs[0]`` tokens, the best ``rung_keep`` of them go on to
            ``rungs[1]``, and so on; only the last survivors are read to ``target_length`` and can become
            parents. A candidate a rung drops is never complete, so a prefix that ranks candidates unlike
            the whole window can lose a future parent.
        rung_keep: the fraction of a rung's candidates that go on (at least one).
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
    max_factor: str | float | None = None
    seed_methods: tuple[str, ...] = field(default_factory=lambda: tuple(methods_with("seed")))
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
    racing: str | bool = "exact"
    attention_policy: str = "su"
    seed: int = 0
    dtype: str = "fp32"
    chunk_tokens: int = 4096
    rungs: tuple[int, ...] = ()
    rung_keep: float = 0.5

    def __post_init__(self) -> None:
        if self.racing is True or self.racing is False:
            object.__setattr__(self, "racing", "exact" if self.racing else "off")
        self._check_target_and_mode()
        self._check_budget()
        self._check_factors()
        object.__setattr__(self, "user_seeds", tuple(tuple(float(x) for x in s) for s in self.user_seeds))
        object.__setattr__(self, "seed_methods", tuple(self.seed_methods))
        object.__setattr__(self, "n_hat_choices", tuple(sorted(set(self.n_hat_choices))))
        self._check_reading()

    def _check_reading(self) -> None:
        """dtype, chunks and rungs: how a candidate's documents are read."""
        if self.dtype not in SEARCH_DTYPES:
            self._bad("dtype", f"one of {SEARCH_DTYPES}")
        if not _is_int(self.chunk_tokens, 1):
            self._bad("chunk_tokens", "a positive number of tokens")
        try:
            rungs = tuple(self.rungs)
        except TypeError:
            rungs = None
        if rungs is None or any(not _is_int(r, 1) for r in rungs):
            self._bad("rungs", "prefix lengths in tokens (positive integers), e.g. (12288, 20480)")
        object.__setattr__(self, "rungs", rungs)
        if any(b <= a for a, b in zip(rungs, rungs[1:], strict=False)) or (rungs and rungs[-1] >= self.target_length):
            self._bad("rungs", f"strictly increasing prefix lengths below target_length={self.target_length}")
        if rungs and self.mode == "longrope2":
            self._bad("rungs", "() in mode 'longrope2': needle-driven fitness counts only the answer at the end of "
                               "each document, so a prefix says nothing")
        if not _is_number(self.rung_keep) or not 0 < self.rung_keep <= 1:
            self._bad("rung_keep", "a fraction in (0, 1]")

    def _bad(self, name: str, allowed: str) -> None:
        raise SearchError(f"{name}={getattr(self, name)!r} is not allowed: {allowed}")

    def _check_target_and_mode(self) -> None:
        from ..data import SOURCES
        from ..rope.base import MAX_TARGET_LENGTH

        t = self.target_length
        if not _is_int(t, 2) or t > MAX_TARGET_LENGTH:
            self._bad("target_length", f"an integer in [2, {MAX_TARGET_LENGTH}] (tokens; above the model's L0)")
        if self.mode not in MODES:
            self._bad("mode", f"one of {MODES}")
        if self.corpus not in SOURCES:
            self._bad("corpus", f"one of {tuple(SOURCES)}")
        if self.racing not in RACING:
            self._bad("racing", f"one of {RACING} (or True / False for 'exact' / 'off')")
        if self.attention_policy == "constant":
            self._bad("attention_policy", "'su' or 'yarn': 'constant' needs a fixed attention_factor, which a search "
                                          "does not carry (the factor follows s)")
        if self.attention_policy not in ("su", "yarn"):
            self._bad("attention_policy", "'su' (sqrt(1 + ln s / ln L0)) or 'yarn' (0.1 ln s + 1)")
        if self.critical_dim is not None and not _is_int(self.critical_dim, 1):
            self._bad("critical_dim", "None (the theoretical one) or a pair index >= 1")
        if not _is_int(self.seed, 0):
            self._bad("seed", "an integer >= 0")

    def _check_budget(self) -> None:
        for name in ("population", "parents", "generations", "n_documents", "per_document", "n_needles"):
            if not _is_int(getattr(self, name), 0 if name == "generations" else 1):
                self._bad(name, "a positive integer" if name != "generations" else "an integer >= 0")
        if self.parents < 2:
            self._bad("parents", "at least 2 (crossover needs two distinct parents)")
        if self.population < self.parents:
            self._bad("population", f"at least parents={self.parents} (the first parents come from the population)")
        for name in ("mutants", "crossovers", "n_hat_top", "critical_dim_span"):
            if not _is_int(getattr(self, name), 0):
                self._bad(name, "an integer >= 0")
        if self.mutants + self.crossovers < 1 and self.generations > 0:
            self._bad("mutants", "mutants + crossovers >= 1 when generations > 0")
        for name in ("mutation_p", "crossover_p"):
            v = getattr(self, name)
            if not _is_number(v) or not 0 <= v <= 1:
                self._bad(name, "a probability in [0, 1]")
        if any(not _is_int(c, 0) for c in self.n_hat_choices) or 0 not in self.n_hat_choices:
            self._bad("n_hat_choices", "non-negative integers including 0")

    def _check_factors(self) -> None:
        m = self.max_factor
        if isinstance(m, str) and m not in MAX_FACTORS:
            self._bad("max_factor", f"None (the mode's default), one of {MAX_FACTORS} or a number >= s")
        if m is not None and not isinstance(m, str) and not (_is_number(m) and m >= 1):
            self._bad("max_factor", f"None (the mode's default), one of {MAX_FACTORS} or a finite number >= s")
        for i, seed_factors in enumerate(self.user_seeds):
            try:
                ok = len(seed_factors) > 0 and all(_is_number(x) and x > 0 for x in seed_factors)
            except TypeError:
                ok = False
            if not ok:
                raise SearchError(f"user_seeds[{i}]={seed_factors!r} is not allowed: a list of finite factors > 0")
        seeding = methods_with("seed")
        if set(self.seed_methods) - set(seeding):
            self._bad("seed_methods", f"a subset of {tuple(seeding)} (the methods with the role 'seed')")

    def max_factor_for(self, s: float) -> float:
        """The factors' upper bound for extension ratio ``s`` (the mode's default when ``max_factor`` is None)."""
        m = DEFAULT_MAX_FACTOR[self.mode] if self.max_factor is None else self.max_factor
        return {"1+s": 1 + s, "1.25s": 1.25 * s, "2s": 2 * s}[m] if isinstance(m, str) else float(m)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @property
    def evaluations_budget(self) -> int:
        """Candidates of the factor search: the population plus every generation's children."""
        return (self.population + self.generations * (self.mutants + self.crossovers)) * (
            2 * self.critical_dim_span + 1 if self.mode == "longrope2" else 1)
