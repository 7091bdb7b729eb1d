"""YaRN (Peng et al. 2023): NTK-by-parts ramp between extrapolation and interpolation, plus an
attention temperature ``0.1 ln s + 1``. Static, or dynamic (``s`` from the current length)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from .base import RopeFrequencies, RopeSpec, fail, register
from .forms import LLAMA_CPP_VERIFIED, GGUFForm, HFForm, NotExpressibleError, gguf_export_command
from .presence import Control, Look

LLAMA_CPP_BETAS = (32.0, 1.0)  # what llama.cpp's llama loader uses (it reads no yarn beta keys)


def correction_dim(n_rotations: float, head_dim: int, rope_theta: float, L0: int) -> float:
    """The (fractional) pair index whose wavelength fits ``n_rotations`` times into L0."""
    return head_dim * math.log(L0 / (n_rotations * 2 * math.pi)) / (2 * math.log(rope_theta))


def yarn_boundaries(
    head_dim: int, rope_theta: float, L0: int, beta_fast: float = 32.0, beta_slow: float = 1.0,
    truncate: bool = True,
) -> tuple[float, float]:
    """(low, high) pair indices of the ramp, clamped as transformers does (to [0, head_dim - 1])."""
    low = correction_dim(beta_fast, head_dim, rope_theta, L0)
    high = correction_dim(beta_slow, head_dim, rope_theta, L0)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, head_dim - 1)


def yarn_ramp(low: float, high: float, n_pairs: int) -> torch.Tensor:
    """g_i = clamp((i - low) / (high - low), 0, 1): 0 keeps theta_i, 1 interpolates fully."""
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    return torch.clamp((torch.arange(n_pairs, dtype=torch.float32) - low) / (high - low), 0, 1)


def yarn_attention_factor(s: float) -> float:
    """0.1 ln s + 1 (1 for s <= 1)."""
    return 1.0 if s <= 1 else 0.1 * math.log(s) + 1.0


@dataclass(frozen=True, kw_only=True)
class YarnSpec(RopeSpec):
    """YaRN.

    Args:
        beta_fast: pairs rotating more than this many times within L0 are kept (32; Mistral 128).
        beta_slow: pairs rotating fewer times than this are fully interpolated (1; Mistral 2).
        attention_factor: cos/sin multiplier; None for ``0.1 ln s + 1``.
        truncate: floor/ceil the ramp boundaries (transformers' default).
        dynamic: use ``s = max(1, n / L0)`` for the current length ``n`` instead of ``factor``.
    """

    method: ClassVar[str] = "yarn"
    words: ClassVar[str] = "YaRN (high frequencies kept, low ones interpolated, attention temperature)"
    label: ClassVar[str] = "YaRN"
    look: ClassVar[Look] = Look("#2ca02c", "dash", 2.0, "circle")
    teaching_rank: ClassVar[int] = 4
    roles: ClassVar[frozenset[str]] = frozenset({"compare", "evaluate", "seed"})
    explorer_controls: ClassVar[tuple[Control, ...]] = (
        Control("beta_fast", "β_fast", 32.0, 1.0, 256.0, 1.0),
        Control("beta_slow", "β_slow", 1.0, 0.25, 16.0, 0.25))
    hf_rope_types: ClassVar[tuple[str, ...]] = ("yarn",)
    hf_keys: ClassVar[frozenset[str]] = frozenset({
        "factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow", "mscale",
        "mscale_all_dim", "truncate"})
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    truncate: bool = True
    dynamic: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("beta_fast", "beta_slow"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                fail(name, v, "a finite number > 0")
        if self.beta_fast <= self.beta_slow:
            fail("beta_fast", self.beta_fast, f"a number > beta_slow={self.beta_slow:g}")
        a = self.attention_factor
        if a is not None and (
            isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0
        ):
            fail("attention_factor", a, "None (0.1 ln s + 1) or a finite number > 0")

    @property
    def is_length_dependent(self) -> bool:
        return self.dynamic

    def boundaries(self) -> tuple[float, float]:
        return yarn_boundaries(
            self.head_dim, self.rope_theta, self.original_max_position_embeddings,
            self.beta_fast, self.beta_slow, self.truncate,
        )

    def ramp_betas(self) -> tuple[float, float]:
        return self.beta_fast, self.beta_slow

    def explorer_note(self) -> str:
        """Where the ramp runs, and which whole β_fast values give the same curve: the ramp's ends are rounded to
        whole pairs (floor / ceil, as transformers does), so β_fast moves the curve only when it crosses a pair."""
        low, high = self.boundaries()
        L0, d, b = self.original_max_position_embeddings, self.head_dim, self.rope_theta
        beta_max = int(self.explorer_controls[0].high)

        def beta_at(pair: float) -> float:  # the β whose correction dimension is exactly ``pair``
            return L0 / (2 * math.pi * b ** (2 * pair / d))

        first = max(1, math.floor(beta_at(low + 1)) + 1)
        last = min(beta_max, math.floor(beta_at(low)) if low > 0 else beta_max)
        same = (f"β_fast {first}–{last} all give pair {int(low)}" if last > first
                else f"β_fast {first} gives pair {int(low)}")
        return (f"ramp from pair {int(low)} to pair {int(high)}: its ends are whole pairs, so {same} "
                f"(now {self.beta_fast:g})")

    def without_attention_factor(self) -> YarnSpec:
        return replace(self, attention_factor=1.0)

    @classmethod
    def from_hf(cls, params: dict[str, Any], *, geometry: dict[str, Any], factor: float) -> YarnSpec:
        attention = params.get("attention_factor")
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
        if attention is None and mscale and mscale_all_dim:  # DeepSeek's form, as transformers reads it
            def get_mscale(scale: float, m: float) -> float:
                return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
            attention = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
        return cls(**geometry, factor=factor, beta_fast=float(params.get("beta_fast") or 32),
                   beta_slow=float(params.get("beta_slow") or 1), attention_factor=attention,
                   truncate=bool(params.get("truncate", True)))

    def hf_form(self, allow_lossy: bool = False) -> HFForm:
        notes: tuple[str, ...] = ()
        if self.dynamic:
            msg = "dynamic YaRN (s from the current length) has no transformers rope_type"
            if not allow_lossy:
                raise NotExpressibleError(msg + "; export with allow_lossy=True to write static YaRN")
            notes = (msg + "; written as static YaRN",)
        form = super().hf_form(allow_lossy)
        params = {k: v for k, v in form.params.items() if k != "truncate" or not v}  # truncate=True is the default
        return replace(form, params=params, notes=notes)

    def llama_cpp_flags(self) -> tuple[str | None, str]:
        if self.dynamic:
            return None, f"llama.cpp has no equivalent of {self.method} (dynamic)"
        s, L, L0 = self.factor, self.target_length, self.original_max_position_embeddings
        flags = (f"-c {L} --rope-scaling yarn --rope-scale {s:g} --yarn-orig-ctx {L0} "
                 f"--yarn-beta-fast {self.beta_fast:g} --yarn-beta-slow {self.beta_slow:g}")
        if self.attention_factor is not None and not math.isclose(self.attention_factor, yarn_attention_factor(s)):
            # llama.cpp overwrites the runtime yarn_attn_factor when YaRN is on and multiplies cos/sin by
            # (0.1 ln s + 1) * <arch>.rope.scaling.attn_factor; only the GGUF key carries a custom factor
            ratio = self.attention_factor / yarn_attention_factor(s)
            return (flags + f" --override-kv llama.rope.scaling.attn_factor=float:{ratio:.6g}",
                    f"or {gguf_export_command(self)}; --yarn-attn-factor would be ignored (llama.cpp recomputes "
                    "it when YaRN is on)")
        return flags, LLAMA_CPP_VERIFIED + "; the same as " + gguf_export_command(self)

    def gguf_form(self, architecture: str) -> GGUFForm:
        if self.dynamic:
            raise NotExpressibleError(f"dynamic {self.method} is not expressible in a GGUF: llama.cpp's frequencies "
                                      "do not follow the current sequence length; export a static method")
        if (float(self.beta_fast), float(self.beta_slow)) != LLAMA_CPP_BETAS or not self.truncate:
            raise NotExpressibleError(
                f"YaRN with beta_fast={self.beta_fast:g}, beta_slow={self.beta_slow:g}, truncate={self.truncate} is "
                f"not expressible in a {architecture} GGUF: llama.cpp's loader reads no beta keys and uses 32 / 1 "
                "with floor/ceil boundaries")
        L0 = self.original_max_position_embeddings
        meta = {"rope.scaling.type": ("yarn", "string"), "rope.scaling.factor": (float(self.factor), "float32"),
                "rope.scaling.original_context_length": (L0, "uint32")}
        attention = self.frequencies().attention_factor / yarn_attention_factor(self.factor)  # llama.cpp applies
        return GGUFForm(meta, attention_factor=attention)  # 0.1 ln s + 1 itself


@register(YarnSpec, "YaRN: ramp from theta_i (fast pairs) to theta_i/s (slow pairs), temperature")
def compute_yarn(spec: YarnSpec, seq_len: int | None = None) -> RopeFrequencies:
    s = spec.factor
    if spec.dynamic and seq_len is not None:
        s = max(1.0, seq_len / spec.original_max_position_embeddings)
    if s == 1.0:
        return RopeFrequencies(spec.original_inv_freq(), 1.0 if spec.attention_factor is None else spec.attention_factor)
    d = spec.head_dim
    pos_freqs = spec.rope_theta ** (torch.arange(0, d, 2).to(dtype=torch.float) / d)  # (D,) = 1/theta_i
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (s * pos_freqs)
    low, high = spec.boundaries()
    keep = 1 - yarn_ramp(low, high, d // 2)  # share of theta_i kept, per pair
    inv_freq = inv_freq_interpolation * (1 - keep) + inv_freq_extrapolation * keep
    attention = spec.attention_factor if spec.attention_factor is not None else yarn_attention_factor(s)
    return RopeFrequencies(inv_freq, float(attention))
