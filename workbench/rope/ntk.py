"""NTK-aware scaling: a larger base, ``b' = b * s^(d/(d-2))``, so the lowest pair is slowed by s and
the highest frequencies are left almost unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import RopeFrequencies, RopeSpec, default_inv_freq, register


@dataclass(frozen=True, kw_only=True)
class NTKSpec(RopeSpec):
    """Static NTK-aware base change (bloc97, 2023)."""

    method: ClassVar[str] = "ntk"

    @property
    def scaled_base(self) -> float:
        """b' = b * s^(d/(d-2)). transformers can express this as default RoPE with rope_theta=b'."""
        d = self.head_dim
        return self.rope_theta * self.factor ** (d / (d - 2))


@register(NTKSpec, "NTK-aware: base b*s^(d/(d-2)); high frequencies kept, lowest slowed by s")
def compute_ntk(spec: NTKSpec, seq_len: int | None = None) -> RopeFrequencies:
    return RopeFrequencies(default_inv_freq(spec.head_dim, spec.scaled_base), 1.0)
