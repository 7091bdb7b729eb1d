"""Llama-3.1 scaling: keep short wavelengths, divide long ones by s, blend in between."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .base import RopeFrequencies, RopeSpec, fail, register
from .forms import GGUFForm, gguf_export_command
from .presence import Control, Look


@dataclass(frozen=True, kw_only=True)
class Llama3Spec(RopeSpec):
    """Args:
        low_freq_factor: wavelengths above ``L0 / low_freq_factor`` are divided by s (1).
        high_freq_factor: wavelengths below ``L0 / high_freq_factor`` are kept (4).
    """

    method: ClassVar[str] = "llama3"
    words: ClassVar[str] = "Llama-3 scaling (short wavelengths kept, long ones divided by the factor)"
    label: ClassVar[str] = "Llama 3"
    look: ClassVar[Look] = Look("#9467bd", "longdash", 2.0, "square")
    teaching_rank: ClassVar[int] = 5
    roles: ClassVar[frozenset[str]] = frozenset({"compare"})
    explorer_controls: ClassVar[tuple[Control, ...]] = (
        Control("low_freq_factor", "low_freq_factor", 1.0, 0.25, 8.0, 0.25),
        Control("high_freq_factor", "high_freq_factor", 4.0, 0.5, 32.0, 0.5))
    hf_rope_types: ClassVar[tuple[str, ...]] = ("llama3",)
    hf_keys: ClassVar[frozenset[str]] = frozenset({"factor", "original_max_position_embeddings", "low_freq_factor",
                                                   "high_freq_factor"})
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("low_freq_factor", "high_freq_factor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                fail(name, v, "a finite number > 0")
        if self.high_freq_factor <= self.low_freq_factor:
            fail("high_freq_factor", self.high_freq_factor, f"a number > low_freq_factor={self.low_freq_factor:g}")

    def wavelength_thresholds(self) -> tuple[float, float]:
        """(high-frequency threshold, low-frequency threshold) in tokens: L0/high, L0/low."""
        L0 = self.original_max_position_embeddings
        return L0 / self.high_freq_factor, L0 / self.low_freq_factor

    @classmethod
    def from_hf(cls, params: dict[str, Any], *, geometry: dict[str, Any], factor: float) -> Llama3Spec:
        return cls(**geometry, factor=factor, low_freq_factor=float(params.get("low_freq_factor", 1.0)),
                   high_freq_factor=float(params.get("high_freq_factor", 4.0)))

    def llama_cpp_flags(self) -> tuple[str | None, str]:
        return gguf_export_command(self), ("llama.cpp has no runtime flag for llama3 scaling; the GGUF carries it "
                                           "as rope_freqs.weight (Llama GGUFs; not verified by execution)")

    def gguf_form(self, architecture: str) -> GGUFForm:
        freqs = [float(x) for x in (self.original_inv_freq() / self.frequencies().inv_freq)]
        # rope.scaling.type none: never let a runtime rope_freq_scale apply on top of the per-pair factors
        return GGUFForm({"rope.scaling.type": ("none", "string")}, rope_freqs=freqs)


@register(Llama3Spec, "Llama-3: keep short wavelengths, theta_i/s for long ones, smooth blend between")
def compute_llama3(spec: Llama3Spec, seq_len: int | None = None) -> RopeFrequencies:
    inv_freq = spec.original_inv_freq()
    s = spec.factor
    L0 = spec.original_max_position_embeddings
    low, high = spec.low_freq_factor, spec.high_freq_factor
    high_freq_wavelen, low_freq_wavelen = spec.wavelength_thresholds()
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / s, inv_freq)
    smooth = (L0 / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / s + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return RopeFrequencies(torch.where(is_medium, smoothed, scaled), 1.0)
