"""NTK-aware scaling: a larger base, ``b' = b * s^(d/(d-2))``, so the lowest pair is slowed by s and
the highest frequencies are left almost unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import RopeFrequencies, RopeSpec, default_inv_freq, fail, register
from .forms import GGUFForm, HFForm
from .presence import Look


@dataclass(frozen=True, kw_only=True)
class NTKSpec(RopeSpec):
    """Static NTK-aware base change (bloc97, 2023). transformers reads it as default RoPE with a new base,
    so no rope_type is read back as NTK."""

    method: ClassVar[str] = "ntk"
    words: ClassVar[str] = "NTK-aware base change"
    label: ClassVar[str] = "NTK"
    look: ClassVar[Look] = Look("#ff7f0e", "dashdot", 2.0)
    teaching_rank: ClassVar[int] = 2
    roles: ClassVar[frozenset[str]] = frozenset({"compare", "evaluate", "seed"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head_dim < 4:  # the base's exponent d/(d-2) needs two pairs at least
            fail("head_dim", self.head_dim, "an even integer >= 4 for an NTK base change (its exponent is d/(d-2))")

    @property
    def scaled_base(self) -> float:
        """b' = b * s^(d/(d-2)). transformers can express this as default RoPE with rope_theta=b'."""
        d = self.head_dim
        return self.rope_theta * self.factor ** (d / (d - 2))

    def hf_form(self, allow_lossy: bool = False) -> HFForm:
        note = (f"NTK-aware scaling is written as default RoPE with rope_theta = "
                f"{self.rope_theta:g} * {self.factor:g}^({self.head_dim}/{self.head_dim - 2}) = {self.scaled_base:.6g}")
        return HFForm({"rope_type": "default"}, self.target_length, self.scaled_base, (note,))

    def llama_cpp_flags(self) -> tuple[str | None, str]:
        return (f"-c {self.target_length} --rope-freq-base {self.scaled_base:.6g}",
                "NTK-aware = a larger base (not verified by execution)")

    def gguf_form(self, architecture: str) -> GGUFForm:
        return GGUFForm({"rope.freq_base": (float(self.scaled_base), "float32")})


@register(NTKSpec, "NTK-aware: base b*s^(d/(d-2)); high frequencies kept, lowest slowed by s")
def compute_ntk(spec: NTKSpec, seq_len: int | None = None) -> RopeFrequencies:
    return RopeFrequencies(default_inv_freq(spec.head_dim, spec.scaled_base), 1.0)
