"""Position interpolation (PI): every pair slowed by the extension ratio, ``theta_i / s``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import RopeFrequencies, RopeSpec, register
from .forms import GGUFForm
from .presence import Look


@dataclass(frozen=True, kw_only=True)
class LinearSpec(RopeSpec):
    """PI (Chen et al. 2023): positions squeezed by ``s`` so the target length maps onto L0."""

    method: ClassVar[str] = "linear"
    words: ClassVar[str] = "position interpolation (every frequency divided by the factor)"
    label: ClassVar[str] = "PI"
    look: ClassVar[Look] = Look("#1f77b4", "dot", 3.5)
    teaching_rank: ClassVar[int] = 1
    roles: ClassVar[frozenset[str]] = frozenset({"compare", "evaluate", "seed"})
    hf_rope_types: ClassVar[tuple[str, ...]] = ("linear",)
    hf_keys: ClassVar[frozenset[str]] = frozenset({"factor"})

    @classmethod
    def config_findings(cls, rope: dict[str, Any], *, max_pos: int | None, L0: int, head_dim: int,
                        spec: RopeSpec | None) -> list[tuple[str, str]]:
        factor = rope.get("factor")
        if factor and max_pos and max_pos <= L0 and factor > 1:
            return [("note", f"linear factor {factor:g} but max_position_embeddings is still {max_pos}; the model "
                             f"can read {int(max_pos * factor)} tokens")]
        return []

    def llama_cpp_flags(self) -> tuple[str | None, str]:
        return f"-c {self.target_length} --rope-scaling linear --rope-scale {self.factor:g}", "not verified by execution"

    def gguf_form(self, architecture: str) -> GGUFForm:
        return GGUFForm({"rope.scaling.type": ("linear", "string"),
                         "rope.scaling.factor": (float(self.factor), "float32")})


@register(LinearSpec, "position interpolation: theta_i / s for every pair")
def compute_linear(spec: LinearSpec, seq_len: int | None = None) -> RopeFrequencies:
    inv_freq = spec.original_inv_freq()
    inv_freq /= spec.factor  # in place, as transformers does, for bit-equal results
    return RopeFrequencies(inv_freq, 1.0)
