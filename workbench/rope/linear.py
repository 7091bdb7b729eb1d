"""Position interpolation (PI): every pair slowed by the extension ratio, ``theta_i / s``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import RopeFrequencies, RopeSpec, register


@dataclass(frozen=True, kw_only=True)
class LinearSpec(RopeSpec):
    """PI (Chen et al. 2023): positions squeezed by ``s`` so the target length maps onto L0."""

    method: ClassVar[str] = "linear"


@register(LinearSpec, "position interpolation: theta_i / s for every pair")
def compute_linear(spec: LinearSpec, seq_len: int | None = None) -> RopeFrequencies:
    inv_freq = spec.original_inv_freq()
    inv_freq /= spec.factor  # in place, as transformers does, for bit-equal results
    return RopeFrequencies(inv_freq, 1.0)
