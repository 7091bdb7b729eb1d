"""LongRoPE2 (Shang et al. 2025): factors searched only from the critical dimension up; pairs below
it follow an NTK shape anchored at the critical pair, ``lambda_i = lambda_cd^(i/cd)``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from .base import RopeFrequencies, RopeSpec, SpecError, critical_dimension, fail, register
from .forms import HFForm
from .longrope import LongRopeSpec, compute_longrope
from .presence import Control, Look

__all__ = ["LongRope2Spec", "compute_longrope2", "critical_dimension", "longrope2_factors"]


def longrope2_factors(upper: Sequence[float], critical_dim: int, n_pairs: int) -> tuple[float, ...]:
    """Full per-pair list from the factors of pairs ``>= critical_dim``: NTK shape below it."""
    upper = [float(x) for x in upper]
    if len(upper) != n_pairs - critical_dim:
        raise SpecError(
            f"upper factors have {len(upper)} values; pairs {critical_dim}..{n_pairs - 1} need "
            f"{n_pairs - critical_dim}"
        )
    anchor = upper[0]
    if not math.isfinite(anchor) or anchor <= 0:
        fail("long_factor[critical_dim]", anchor, "a finite number > 0")
    lower = [anchor ** (i / critical_dim) for i in range(critical_dim)]
    return tuple(lower + upper)


@dataclass(frozen=True, kw_only=True)
class LongRope2Spec(LongRopeSpec):
    """LongRoPE with a critical dimension.

    Args:
        critical_dim: the first searched pair; None for :func:`critical_dimension`.
        long_factor: full list (length head_dim/2) whose pairs below ``critical_dim`` must follow
            ``lambda_cd^(i/cd)``; build it with :func:`longrope2_factors`.
    """

    method: ClassVar[str] = "longrope2"
    words: ClassVar[str] = "LongRoPE2 (per-pair factors searched from the critical pair up, NTK shape below it)"
    label: ClassVar[str] = "LongRoPE2"
    look: ClassVar[Look] = Look("#e377c2", "solid", 2.5, "triangle-up")
    teaching_rank: ClassVar[int] = 7
    roles: ClassVar[frozenset[str]] = frozenset()  # not LongRoPE's: its factors need a critical dimension
    explorer_controls: ClassVar[tuple[Control, ...]] = (
        *LongRopeSpec.explorer_controls, Control("critical_dim", "critical pair", 1, 1, 2, kind="pair"))
    hf_rope_types: ClassVar[tuple[str, ...]] = ()  # written as rope_type "longrope", which reads back as LongRoPE
    critical_dim: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        D = self.n_pairs
        cd = self.critical_dim
        if cd is None:
            cd = critical_dimension(self.head_dim, self.rope_theta, self.original_max_position_embeddings)
            object.__setattr__(self, "critical_dim", cd)
        if isinstance(cd, bool) or not isinstance(cd, int) or not 1 <= cd <= D - 1:
            fail("critical_dim", cd, f"an integer pair index in [1, {D - 1}]")
        expected = longrope2_factors(self.long_factor[cd:], cd, D)
        for i in range(cd):
            if not math.isclose(self.long_factor[i], expected[i], rel_tol=1e-6):
                raise SpecError(
                    f"long_factor[{i}]={self.long_factor[i]:g} is not allowed: below critical_dim={cd} "
                    f"LongRoPE2 requires lambda_cd^(i/cd)={expected[i]:.6g}; build the list with "
                    "longrope2_factors(upper, critical_dim, n_pairs)"
                )

    def critical_pair(self) -> int:
        return self.critical_dim

    def hf_form(self, allow_lossy: bool = False) -> HFForm:
        form = super().hf_form(allow_lossy)
        note = (f"LongRoPE2 (critical_dim={self.critical_dim}) is written as rope_type='longrope' with the full "
                "per-pair long_factor")
        return replace(form, notes=(note, *form.notes))

    @classmethod
    def factor_params(cls, curve: Sequence[float], critical_dim: int | None) -> dict[str, Any]:
        cd = int(critical_dim)
        return {"critical_dim": cd, "long_factor": longrope2_factors(curve[cd:], cd, len(curve))}

    @classmethod
    def example_params(cls, like: RopeSpec) -> dict[str, Any]:
        """Factors rising gently from s at the theoretical critical pair (not a searched result)."""
        D, s = like.n_pairs, like.factor
        cd = critical_dimension(like.head_dim, like.rope_theta, like.original_max_position_embeddings)
        upper = [round(s + 0.02 * k * s, 4) for k in range(D - cd)]
        return {"long_factor": longrope2_factors(upper, cd, D)}


@register(LongRope2Spec, "LongRoPE2: searched pairs >= critical dim, NTK shape below it")
def compute_longrope2(spec: LongRope2Spec, seq_len: int | None = None) -> RopeFrequencies:
    return compute_longrope(spec, seq_len)
