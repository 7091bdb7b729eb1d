"""LongRoPE (Ding et al. 2024): searched per-pair factors, a window of initial positions that keep
the original rotation, and an attention temperature.

Angle of pair i at position n: ``n * theta_i`` for ``n < n_hat``, ``n * theta_i / lambda_i`` for
``n >= n_hat`` (positions stay absolute). Sequences up to L0 use ``short_factor``, longer ones
``long_factor`` (transformers' rule: ``max(position_ids) + 1 > L0``).

Attention factor: we apply it to every position, including the first n_hat (the authors' old code
dropped it there), and to short sequences as well, which is what transformers does for
``rope_type="longrope"``; the config doctor points this out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import RopeFrequencies, RopeSpec, SpecError, check_factor_list, fail, register

ATTENTION_POLICIES = ("su", "yarn", "constant")


def su_attention_factor(s: float, L0: int) -> float:
    """sqrt(1 + ln s / ln L0), 1 for s <= 1 (LongRoPE / Phi-3)."""
    return 1.0 if s <= 1 else math.sqrt(1 + math.log(s) / math.log(L0))


@dataclass(frozen=True, kw_only=True)
class LongRopeSpec(RopeSpec):
    """Args:
        long_factor: lambda_i per pair (length head_dim/2), used beyond L0.
        short_factor: per-pair factors up to L0; None means all 1 (the original RoPE).
        n_hat: positions below this keep theta_i (0 <= n_hat <= target length).
        attention_policy: "su" (sqrt(1 + ln s / ln L0)), "yarn" (0.1 ln s + 1) or "constant".
        attention_factor: the value for attention_policy="constant".
        enforce_monotone: require non-decreasing factors (the search's constraint). Shipped
            configs are imported with this off.
    """

    method: ClassVar[str] = "longrope"
    long_factor: tuple[float, ...]
    short_factor: tuple[float, ...] | None = None
    n_hat: int = 0
    attention_policy: str = "su"
    attention_factor: float | None = None
    enforce_monotone: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        D = self.n_pairs
        mono = self.enforce_monotone
        object.__setattr__(self, "long_factor", check_factor_list("long_factor", self.long_factor, D, monotone=mono))
        short = (1.0,) * D if self.short_factor is None else self.short_factor
        object.__setattr__(self, "short_factor", check_factor_list("short_factor", short, D, monotone=mono))
        n_hat = self.n_hat
        if isinstance(n_hat, bool) or not isinstance(n_hat, int) or n_hat < 0:
            fail("n_hat", n_hat, f"an integer in [0, target length {self.target_length}]")
        if n_hat > self.target_length:
            fail("n_hat", n_hat, f"an integer in [0, target length {self.target_length}]")
        if self.attention_policy not in ATTENTION_POLICIES:
            fail("attention_policy", self.attention_policy, f"one of {ATTENTION_POLICIES}")
        a = self.attention_factor
        if self.attention_policy == "constant":
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0:
                fail("attention_factor", a, "a finite number > 0 when attention_policy='constant'")
            object.__setattr__(self, "attention_factor", float(a))
        elif a is not None:
            raise SpecError(
                f"attention_factor={a!r} is not allowed with attention_policy={self.attention_policy!r}: "
                "it is derived from s; use attention_policy='constant' to set it"
            )

    @property
    def start_window(self) -> int:
        return self.n_hat

    @property
    def is_length_dependent(self) -> bool:
        return self.short_factor != self.long_factor

    def resolved_attention_factor(self) -> float:
        """The attention factor this spec applies."""
        if self.attention_policy == "constant":
            return float(self.attention_factor)
        if self.attention_policy == "yarn":
            return 1.0 if self.factor <= 1 else 0.1 * math.log(self.factor) + 1.0
        return su_attention_factor(self.factor, self.original_max_position_embeddings)

    def uses_long(self, seq_len: int | None) -> bool:
        """transformers' switch: long factors when the sequence is longer than L0."""
        n = self.target_length if seq_len is None else seq_len
        return n > self.original_max_position_embeddings


def scaled_inv_freq(head_dim: int, rope_theta: float, factors: tuple[float, ...]) -> torch.Tensor:
    """theta_i / lambda_i in float32, in transformers' longrope op order."""
    ext = torch.tensor(factors, dtype=torch.float32)  # (D,)
    shape = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim  # (D,)
    return 1.0 / (ext * rope_theta**shape)


@register(LongRopeSpec, "LongRoPE: searched lambda_i per pair, n_hat start window, temperature")
def compute_longrope(spec: LongRopeSpec, seq_len: int | None = None) -> RopeFrequencies:
    factors = spec.long_factor if spec.uses_long(seq_len) else spec.short_factor
    return RopeFrequencies(scaled_inv_freq(spec.head_dim, spec.rope_theta, factors), spec.resolved_attention_factor())


def ramp_factors(n_pairs: int, start_pair: float, end_pair: float, low: float, high: float) -> tuple[float, ...]:
    """A monotone hand-made curve: ``low`` up to ``start_pair``, linear to ``high`` at ``end_pair``.

    Not a searched result; a starting point for the explorer and the demo.
    """
    if end_pair <= start_pair:
        fail("end_pair", end_pair, f"a pair index > start_pair={start_pair:g}")
    out = []
    for i in range(n_pairs):
        t = min(max((i - start_pair) / (end_pair - start_pair), 0.0), 1.0)
        out.append(round(low + t * (high - low), 4))
    return tuple(out)
