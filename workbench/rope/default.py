"""Unscaled RoPE: ``inv_freq_i = theta_i`` at every position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import RopeFrequencies, RopeSpec, register


@dataclass(frozen=True, kw_only=True)
class DefaultSpec(RopeSpec):
    """No rescaling. ``factor`` only says how far beyond L0 the model is asked to read."""

    method: ClassVar[str] = "default"


@register(DefaultSpec, "no rescaling: theta_i at every position")
def compute_default(spec: DefaultSpec, seq_len: int | None = None) -> RopeFrequencies:
    return RopeFrequencies(spec.original_inv_freq(), 1.0)
