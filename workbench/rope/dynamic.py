"""Dynamic NTK: the NTK base change computed for the current length ``n`` (default RoPE up to L0)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from .base import RopeFrequencies, RopeSpec, fail, register
from .forms import GGUFForm, HFForm, NotExpressibleError
from .presence import Look


@dataclass(frozen=True, kw_only=True)
class DynamicSpec(RopeSpec):
    """``b' = b * (s*n/L0 - (s-1))^(d/(d-2))`` for ``n > L0``.

    Unlike transformers, which keeps the frequencies of the longest sequence it has seen until the
    length drops below L0, this is a pure function of the current length.
    """

    method: ClassVar[str] = "dynamic"
    words: ClassVar[str] = "dynamic NTK (base grows with the current length beyond the original context)"
    label: ClassVar[str] = "dynamic NTK"
    look: ClassVar[Look] = Look("#bcbd22", "longdashdot", 2.0)
    teaching_rank: ClassVar[int] = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head_dim < 4:  # the base's exponent d/(d-2) needs two pairs at least
            fail("head_dim", self.head_dim, "an even integer >= 4 for an NTK base change (its exponent is d/(d-2))")
    hf_rope_types: ClassVar[tuple[str, ...]] = ("dynamic",)
    hf_keys: ClassVar[frozenset[str]] = frozenset({"factor", "original_max_position_embeddings"})
    hf_original_from_max_position: ClassVar[bool] = True

    @property
    def is_length_dependent(self) -> bool:
        return True

    def hf_form(self, allow_lossy: bool = False) -> HFForm:
        L0 = self.original_max_position_embeddings
        note = ("for rope_type='dynamic' transformers reads max_position_embeddings as the original "
                f"length, so it is {L0} (not the target {self.target_length}); note that transformers keeps the "
                "frequencies of the longest sequence seen until a sequence shorter than L0 arrives")
        return replace(super().hf_form(allow_lossy), max_position_embeddings=L0, notes=(note,))

    @classmethod
    def config_findings(cls, rope: dict[str, Any], *, max_pos: int | None, L0: int, head_dim: int,
                        spec: RopeSpec | None) -> list[tuple[str, str]]:
        return [("note", f"for dynamic NTK transformers treats max_position_embeddings={max_pos} as the original "
                         "length and keeps the largest length's frequencies until a short sequence resets them")]

    def llama_cpp_flags(self) -> tuple[str | None, str]:
        return None, f"llama.cpp has no equivalent of {self.method} (dynamic)"

    def gguf_form(self, architecture: str) -> GGUFForm:
        raise NotExpressibleError(f"dynamic {self.method} is not expressible in a GGUF: llama.cpp's frequencies do "
                                  "not follow the current sequence length; export a static method")


@register(DynamicSpec, "dynamic NTK: NTK base change for the current length n > L0")
def compute_dynamic(spec: DynamicSpec, seq_len: int | None = None) -> RopeFrequencies:
    L0 = spec.original_max_position_embeddings
    n = spec.target_length if seq_len is None else int(seq_len)
    if n <= L0:
        return RopeFrequencies(spec.original_inv_freq(), 1.0)
    d = spec.head_dim
    # transformers evaluates this on a 0-d int64 tensor (max(position_ids) + 1), i.e. in float32;
    # doing the same keeps parity to the last bit.
    n_t = torch.tensor(n, dtype=torch.int64)
    base = spec.rope_theta * ((spec.factor * n_t / L0) - (spec.factor - 1)) ** (d / (d - 2))
    exponent = torch.arange(0, d, 2, dtype=torch.int64).float() / d  # (D,)
    return RopeFrequencies(1.0 / (base**exponent), 1.0)


def dynamic_base(spec: DynamicSpec, seq_len: int) -> float:
    """The effective base at ``seq_len`` (for diagnostics)."""
    L0 = spec.original_max_position_embeddings
    if seq_len <= L0:
        return spec.rope_theta
    d = spec.head_dim
    return spec.rope_theta * (spec.factor * seq_len / L0 - (spec.factor - 1)) ** (d / (d - 2))

