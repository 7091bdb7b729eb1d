"""Unscaled RoPE: ``inv_freq_i = theta_i`` at every position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import RopeFrequencies, RopeSpec, register
from .forms import LLAMA_CPP_VERIFIED, GGUFForm, HFForm
from .presence import Look


@dataclass(frozen=True, kw_only=True)
class DefaultSpec(RopeSpec):
    """No rescaling. ``factor`` only says how far beyond L0 the model is asked to read."""

    method: ClassVar[str] = "default"
    words: ClassVar[str] = "plain RoPE without rescaling"
    look: ClassVar[Look] = Look("#7f7f7f", "solid", 1.5)
    teaching_rank: ClassVar[int] = 0
    roles: ClassVar[frozenset[str]] = frozenset({"compare", "evaluate"})
    hf_rope_types: ClassVar[tuple[str, ...]] = ("default",)

    @classmethod
    def from_hf(cls, params: dict[str, Any], *, geometry: dict[str, Any], factor: float) -> DefaultSpec:
        return cls(**geometry)  # a config's factor means nothing without a rescaling

    def hf_form(self, allow_lossy: bool = False) -> HFForm:
        return HFForm({"rope_type": "default"}, self.original_max_position_embeddings, self.rope_theta)

    def llama_cpp_flags(self) -> tuple[str | None, str]:
        return f"-c {self.original_max_position_embeddings} --rope-freq-base {self.rope_theta:g}", LLAMA_CPP_VERIFIED

    def gguf_form(self, architecture: str) -> GGUFForm:
        return GGUFForm(sets_context=False)  # the file as it is


@register(DefaultSpec, "no rescaling: theta_i at every position")
def compute_default(spec: DefaultSpec, seq_len: int | None = None) -> RopeFrequencies:
    return RopeFrequencies(spec.original_inv_freq(), 1.0)
