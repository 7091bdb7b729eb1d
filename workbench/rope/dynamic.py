"""Dynamic NTK: the NTK base change computed for the current length ``n`` (default RoPE up to L0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import RopeFrequencies, RopeSpec, register


@dataclass(frozen=True, kw_only=True)
class DynamicSpec(RopeSpec):
    """``b' = b * (s*n/L0 - (s-1))^(d/(d-2))`` for ``n > L0``.

    Unlike transformers, which keeps the frequencies of the longest sequence it has seen until the
    length drops below L0, this is a pure function of the current length.
    """

    method: ClassVar[str] = "dynamic"

    @property
    def is_length_dependent(self) -> bool:
        return True


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

