"""What a genome means and how it is judged: long factors for a target length (optionally on top of factors a
fine-tuned model already carries), LongRoPE2's long factors per critical dimension judged on needles, or short
factors for the original context; the seeds each starts from, the documents it reads, the spaces it searches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..rope import (
    LongRope2Spec,
    LongRopeSpec,
    RopeSpec,
    available_methods,
    critical_dimension,
    get_method,
    make_spec,
)
from .config import GRID, SearchConfig, SearchError
from .ga import Space

# The seeds' fitness is measured with the searched spec's attention factor, so it is the seed's frequency
# factors in a LongRoPE spec, not the method itself (the held-out report compares the methods).
SHORT_SEEDS = {"original": "original (all 1)", "long factors": "long factors", "geometric mean": "geometric mean"}


def seed_label(name: str) -> str:
    """A seed's name in reports: "PI seed" for a method's factors (its label), a short-factor seed's own name."""
    if name in SHORT_SEEDS:
        return SHORT_SEEDS[name]
    if name in available_methods():
        return f"{get_method(name).spec_cls.display_name()} seed"
    return name


class PerplexityFitness:
    """Fitness = perplexity of whole windows (every prediction counts)."""

    needles = False  # needle-driven fitness counts only the answer's tokens, at the end of each document
    s: float  # the extension ratio the genome's factors start from (set by each target)

    @classmethod
    def documents(cls, tokenizer: Any, cfg: SearchConfig, split: str, n_documents: int, *, per_document: int = 1,
                  seed: int = 0) -> list[Any]:
        """The ``split``'s windows of ``cfg.target_length`` tokens this fitness reads."""
        from ..data import samples

        return samples(tokenizer, cfg.corpus, split, cfg.target_length, n_documents, per_document=per_document,
                       progress=False)

    def check(self, cfg: SearchConfig, n_pairs: int) -> None:
        """What the model decides about the config, checked before any document is read (nothing here)."""

    def spaces(self, cfg: SearchConfig, n_pairs: int, max_grid: int) -> list[Space]:
        """The genome spaces searched, in order: one."""
        return [Space(n_pairs, self.s, max_grid)]


class LongTarget(PerplexityFitness):
    """Genome = long factors for ``target_length`` (on top of ``base_factors`` a fine-tuned model already
    carries, for progressive stage 2: the composed factor is the product)."""

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


class LongRope2Target(LongTarget):
    """LongRoPE2: long factors searched for each critical dimension near the computed one (pairs below it keep the
    rescaling of the NTK-like part, pairs from it on increase strictly), judged by needle-driven perplexity."""

    needles = True

    @classmethod
    def documents(cls, tokenizer: Any, cfg: SearchConfig, split: str, n_documents: int, *, per_document: int = 1,
                  seed: int = 0) -> list[Any]:
        from ..data import needle_samples

        return needle_samples(tokenizer, cfg.corpus, split, cfg.target_length, n_documents, cfg.n_needles, seed=seed)

    def check(self, cfg: SearchConfig, n_pairs: int) -> None:
        cd = cfg.critical_dim
        if cd is not None and not (1 <= cd - cfg.critical_dim_span and cd + cfg.critical_dim_span <= n_pairs - 2):
            raise SearchError(f"critical_dim={cd} (span {cfg.critical_dim_span}) is not allowed: the model has "
                              f"{n_pairs} frequency pairs, so critical_dim +- span must stay in [1, {n_pairs - 2}]")

    def spaces(self, cfg: SearchConfig, n_pairs: int, max_grid: int) -> list[Space]:
        """One space per critical dimension searched."""
        g = self.geometry
        cd0 = cfg.critical_dim if cfg.critical_dim is not None else critical_dimension(
            g["head_dim"], g["rope_theta"], g["original_max_position_embeddings"])
        cds = [c for c in range(cd0 - cfg.critical_dim_span, cd0 + cfg.critical_dim_span + 1) if 1 <= c <= n_pairs - 2]
        if any(math.ceil(round(self.s * GRID, 6)) + (n_pairs - cd - 1) > max_grid for cd in cds):
            raise SearchError(f"max_factor too small for LongRoPE2: pairs >= critical_dim must increase strictly "
                              f"from s={self.s:g} in steps of 0.01 and stay <= {max_grid / GRID:g}")
        return [Space(n_pairs, self.s, max_grid, cd) for cd in cds]


TARGETS = {"longrope": LongTarget, "longrope2": LongRope2Target}  # a search mode's target of long factors


class ShortTarget(PerplexityFitness):
    """Genome = short factors (short-context recovery): evaluated at L0, where they apply,
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

