"""The genetic algorithm (pure and seeded): the space genomes live in, mutation and crossover.

Genome: per-pair factors on a 0.01 grid (stored as integers in hundredths), non-decreasing, in
``[1, max_factor]`` (LongRoPE), or only the pairs from the critical dimension up, strictly increasing in
``[s, max_factor]`` with an NTK shape below (LongRoPE2). Given the same seed and the same evaluations it
proposes the same candidates, which is what makes a resumed search exact.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..rope import longrope2_factors
from .config import GRID, SearchConfig, SearchError

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

