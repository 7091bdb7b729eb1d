"""What a genome means: long factors for a target length (optionally on top of factors a fine-tuned model
already carries), or short factors for the original context; and the seeds each starts from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..rope import LongRope2Spec, LongRopeSpec, RopeSpec, make_spec
from .config import SearchError

# The seeds' fitness is measured with the searched spec's attention factor, so it is the seed's frequency
# factors in a LongRoPE spec, not the method itself (the held-out report compares the methods).
SEED_LABELS = {"linear": "PI seed", "ntk": "NTK seed", "yarn": "YaRN seed", "original": "original (all 1)",
               "long factors": "long factors", "geometric mean": "geometric mean"}


class LongTarget:
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


class ShortTarget:
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

