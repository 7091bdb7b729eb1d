"""LongRoPE (Ding et al. 2024): searched per-pair factors, a window of initial positions that keep
the original rotation, and an attention temperature.

Angle of pair i at position n: ``n * theta_i`` for ``n < n_hat``, ``n * theta_i / lambda_i`` for
``n >= n_hat`` (positions stay absolute). Sequences up to L0 use ``short_factor``, longer ones
``long_factor`` (transformers' rule: ``max(position_ids) + 1 > L0``).

Attention factor: we apply it to every position, including the first n_hat (the authors' old code
dropped it there), and to short sequences as well, which is what transformers does for
``rope_type="longrope"``; the config doctor points this out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from .base import (
    RopeFrequencies,
    RopeSpec,
    SpecError,
    critical_dimension,
    fail,
    make_spec,
    register,
)
from .forms import LLAMA_CPP_VERIFIED, GGUFForm, HFForm, NotExpressibleError, gguf_export_command
from .presence import Control, Look

ATTENTION_POLICIES = ("su", "yarn", "constant")


def su_attention_factor(s: float, L0: int) -> float:
    """sqrt(1 + ln s / ln L0), 1 for s <= 1 (LongRoPE / Phi-3)."""
    return 1.0 if s <= 1 else math.sqrt(1 + math.log(s) / math.log(L0))


def check_factor_list(
    name: str, values: Sequence[float], n_pairs: int, *, monotone: bool, minimum: float = 0.0
) -> tuple[float, ...]:
    """Validate a per-pair factor list and return it as a tuple of floats.

    Raises:
        SpecError: wrong length, non-numeric, NaN/inf, <= ``minimum``, or (if ``monotone``) decreasing.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | torch.Tensor):
        try:
            values = list(values)  # numpy arrays and other iterables
        except TypeError:
            fail(name, values, f"a list of {n_pairs} numbers (one per frequency pair)")
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    values = list(values)
    if len(values) != n_pairs:
        raise SpecError(
            f"{name} has {len(values)} values; it needs exactly {n_pairs} "
            f"(one per frequency pair, head_dim/2)"
        )
    out = []
    for i, v in enumerate(values):
        try:
            x = float(v)
        except (TypeError, ValueError):
            fail(f"{name}[{i}]", v, "a number")
        if not math.isfinite(x):
            fail(f"{name}[{i}]", x, "a finite number (no NaN or inf)")
        if x <= minimum:
            fail(f"{name}[{i}]", x, f"a number > {minimum:g}")
        out.append(x)
    if monotone:
        for i in range(1, len(out)):
            if out[i] < out[i - 1]:
                raise SpecError(
                    f"{name} must be non-decreasing (lambda_i <= lambda_i+1) but {name}[{i - 1}]="
                    f"{out[i - 1]:g} > {name}[{i}]={out[i]:g}; pass enforce_monotone=False to "
                    "accept a shipped non-monotone list"
                )
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class LongRopeSpec(RopeSpec):
    """Args:
        long_factor: lambda_i per pair (length head_dim/2), used beyond L0.
        short_factor: per-pair factors up to L0; None means all 1 (the original RoPE).
        n_hat: positions below this keep theta_i (0 <= n_hat <= target length).
        attention_policy: "su" (sqrt(1 + ln s / ln L0)), "yarn" (0.1 ln s + 1) or "constant".
        attention_factor: the value for attention_policy="constant".
        enforce_monotone: require non-decreasing factors (the search's constraint). Shipped
            configs are imported with this off.
    """

    method: ClassVar[str] = "longrope"
    words: ClassVar[str] = "LongRoPE (per-pair factors; short_factor up to L0, long_factor beyond)"
    label: ClassVar[str] = "LongRoPE"
    look: ClassVar[Look] = Look("#d62728", "solid", 2.5)
    teaching_rank: ClassVar[int] = 6
    roles: ClassVar[frozenset[str]] = frozenset({"compare", "evaluate"})
    explorer_controls: ClassVar[tuple[Control, ...]] = (
        Control("n_hat", "n̂ (start window)", 0, 0, 512, 4, kind="int"),
        Control("attention_policy", "attention", "su", kind="choice", options=("su", "yarn", "constant")),
        Control("attention_factor", "m (constant)", 1.0, 0.5, 2.0, 0.01, shown_when=("attention_policy", "constant")),
        Control("long_factor", "LongRoPE factor curve", kind="curve"))
    hf_rope_types: ClassVar[tuple[str, ...]] = ("longrope", "su")  # "su": Phi-3's first name for it
    hf_keys: ClassVar[frozenset[str]] = frozenset({"factor", "original_max_position_embeddings", "attention_factor",
                                                   "short_factor", "long_factor"})
    long_factor: tuple[float, ...]
    short_factor: tuple[float, ...] | None = None
    n_hat: int = 0
    attention_policy: str = "su"
    attention_factor: float | None = None
    enforce_monotone: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        D = self.n_pairs
        mono = self.enforce_monotone
        object.__setattr__(self, "long_factor", check_factor_list("long_factor", self.long_factor, D, monotone=mono))
        short = (1.0,) * D if self.short_factor is None else self.short_factor
        object.__setattr__(self, "short_factor", check_factor_list("short_factor", short, D, monotone=mono))
        n_hat = self.n_hat
        if isinstance(n_hat, bool) or not isinstance(n_hat, int) or n_hat < 0:
            fail("n_hat", n_hat, f"an integer in [0, target length {self.target_length}]")
        if n_hat > self.target_length:
            fail("n_hat", n_hat, f"an integer in [0, target length {self.target_length}]")
        if self.attention_policy not in ATTENTION_POLICIES:
            fail("attention_policy", self.attention_policy, f"one of {ATTENTION_POLICIES}")
        a = self.attention_factor
        if self.attention_policy == "constant":
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0:
                fail("attention_factor", a, "a finite number > 0 when attention_policy='constant'")
            object.__setattr__(self, "attention_factor", float(a))
        elif a is not None:
            raise SpecError(
                f"attention_factor={a!r} is not allowed with attention_policy={self.attention_policy!r}: "
                "it is derived from s; use attention_policy='constant' to set it"
            )

    @property
    def is_length_dependent(self) -> bool:
        return self.short_factor != self.long_factor

    def resolved_attention_factor(self) -> float:
        """The attention factor this spec applies."""
        if self.attention_policy == "constant":
            return float(self.attention_factor)
        if self.attention_policy == "yarn":
            return 1.0 if self.factor <= 1 else 0.1 * math.log(self.factor) + 1.0
        return su_attention_factor(self.factor, self.original_max_position_embeddings)

    def uses_long(self, seq_len: int | None) -> bool:
        """transformers' switch: long factors when the sequence is longer than L0."""
        n = self.target_length if seq_len is None else seq_len
        return n > self.original_max_position_embeddings

    def without_attention_factor(self) -> LongRopeSpec:
        return replace(self, attention_policy="constant", attention_factor=1.0)

    # ---- transformers ----------------------------------------------------------------------------
    @classmethod
    def from_hf(cls, params: dict[str, Any], *, geometry: dict[str, Any], factor: float) -> LongRopeSpec:
        attention = params.get("attention_factor")
        return cls(**geometry, factor=factor, long_factor=tuple(params.get("long_factor") or ()),
                   short_factor=tuple(params.get("short_factor") or ()) or None,
                   attention_policy="su" if attention is None else "constant", attention_factor=attention,
                   enforce_monotone=False)  # shipped lists need not be monotone

    def hf_form(self, allow_lossy: bool = False) -> HFForm:
        L0, a = self.original_max_position_embeddings, self.resolved_attention_factor()
        params: dict[str, Any] = {
            "rope_type": LongRopeSpec.hf_rope_types[0], "factor": self.factor, "original_max_position_embeddings": L0,
            "short_factor": list(self.short_factor), "long_factor": list(self.long_factor)}
        if self.attention_policy != "su":  # "su" is what transformers derives from factor
            params["attention_factor"] = a
        notes = () if a == 1.0 else (f"transformers applies attention_factor={a:.4f} to every sequence, also those "
                                     "<= original_max_position_embeddings",)
        return HFForm(params, self.target_length, self.rope_theta, notes, top_level_original=True)

    @classmethod
    def config_findings(cls, rope: dict[str, Any], *, max_pos: int | None, L0: int, head_dim: int,
                        spec: RopeSpec | None) -> list[tuple[str, str]]:
        out, D = [], head_dim // 2
        for name in ("short_factor", "long_factor"):
            vals = rope.get(name)
            if vals is None:
                out.append(("error", f"longrope needs {name}"))
            elif len(vals) != D:
                out.append(("error", f"{name} has {len(vals)} values; head_dim {head_dim} needs {D}"))
            elif any(b < a for a, b in zip(vals, vals[1:], strict=False)):
                drops = [i for i in range(1, D) if vals[i] < vals[i - 1]]
                out.append(("warning", f"{name} decreases at {len(drops)} pair(s) (first: pair {drops[0]}, "
                                       f"{vals[drops[0]]:g} after {vals[drops[0] - 1]:g}): a slower pair is stretched "
                                       "less than a faster one, so their wavelengths come closer or swap order, where "
                                       "the LongRoPE search keeps factors non-decreasing; fine if measured, suspect if "
                                       "typed"))
        a = spec.frequencies(L0).attention_factor if spec is not None else 1.0
        if a != 1.0:
            out.append(("warning", f"attention_factor {a:.4f} is also applied to inputs <= L0={L0} (transformers "
                                   "multiplies cos/sin by it at every length); short-context quality depends on "
                                   "short_factor having been chosen with it"))
        return out

    # ---- llama.cpp -------------------------------------------------------------------------------
    def llama_cpp_flags(self) -> tuple[str | None, str]:
        if any(x != 1.0 for x in self.short_factor):
            return None, ("a Llama GGUF cannot switch short/long factors by sequence length (llama.cpp picks "
                          "rope_factors_long/short by the context size); export the long factors alone")
        return gguf_export_command(self), ("per-pair factors as rope_freqs.weight and the attention factor as "
                                           "llama.rope.scaling.attn_factor; " + LLAMA_CPP_VERIFIED)

    def gguf_form(self, architecture: str) -> GGUFForm:
        if any(x != 1.0 for x in self.short_factor):
            raise NotExpressibleError(
                "a short/long factor switch is not expressible on a Llama GGUF: llama.cpp would choose "
                "rope_factors_long/short by the context size n_ctx, not by the sequence length as transformers "
                "does; export the long factors alone (short_factor all 1)")
        attention = self.resolved_attention_factor()
        notes = () if attention == 1.0 else (
            f"llama.cpp applies the long factors and the attention factor {attention:.4f} at every length; "
            f"transformers uses short_factor (all 1) for sequences <= L0={self.original_max_position_embeddings}, "
            "with the same attention factor",)
        # rope.scaling.type none: never let a runtime rope_freq_scale apply on top of the per-pair factors
        return GGUFForm({"rope.scaling.type": ("none", "string")}, [float(x) for x in self.long_factor], attention,
                        notes)

    def llama_cpp_equivalent(self) -> LongRopeSpec:
        """llama.cpp applies the long factors (and the attention factor) to every sequence, where transformers
        uses short_factor up to L0: the same as long factors at every length. Beyond L0 both are this spec."""
        return LongRopeSpec(head_dim=self.head_dim, rope_theta=self.rope_theta,
                            original_max_position_embeddings=self.original_max_position_embeddings, factor=self.factor,
                            long_factor=self.long_factor, short_factor=self.long_factor, n_hat=self.n_hat,
                            attention_policy="constant", attention_factor=self.resolved_attention_factor(),
                            enforce_monotone=self.enforce_monotone)

    # ---- explorer, figures, other geometries -----------------------------------------------------
    @classmethod
    def factor_params(cls, curve: Sequence[float], critical_dim: int | None) -> dict[str, Any]:
        """The factor parameters for a drawn per-pair curve (LongRoPE2 anchors the pairs below critical_dim)."""
        return {"long_factor": tuple(curve)}

    @classmethod
    def example_params(cls, like: RopeSpec) -> dict[str, Any]:
        """A hand-made ramp (not a searched result): 1 up to 30 % of the pairs, then up to 1.5 s."""
        D = like.n_pairs
        return {"long_factor": ramp_factors(D, D * 0.3, D - 1, 1.0, max(1.0, 1.5 * like.factor))}

    @classmethod
    def from_explorer(cls, geometry: dict[str, Any], values: dict[str, Any]) -> LongRopeSpec:
        params: dict[str, Any] = dict(n_hat=int(values["n_hat"]), attention_policy=values["attention_policy"])
        if values["attention_policy"] == "constant":
            params["attention_factor"] = float(values["attention_factor"])
        params.update(cls.factor_params(values["long_factor"], values.get("critical_dim")))
        return make_spec(cls.method, **geometry, enforce_monotone=values["enforce_monotone"], **params)

    def explorer_values(self) -> dict[str, Any]:
        out: dict[str, Any] = {"long_factor": self.long_factor}
        if self.attention_policy == "constant":
            out.update(attention_policy="constant", attention_factor=self.attention_factor)
        return out

    def on_geometry(self, head_dim: int, rope_theta: float, original_max_position_embeddings: int
                    ) -> tuple[RopeSpec, str]:
        L0 = original_max_position_embeddings
        curve = resample_factors(self.long_factor, head_dim // 2)
        params = dict(attention_policy=self.attention_policy, attention_factor=self.attention_factor,
                      n_hat=min(self.n_hat, int(round(self.factor * L0))))
        params.update(self.factor_params(curve, critical_dimension(head_dim, rope_theta, L0)))
        spec = make_spec(self.method, head_dim=head_dim, rope_theta=rope_theta, original_max_position_embeddings=L0,
                         factor=self.factor, **params)
        return spec, "factor curve resampled to its pairs"


def scaled_inv_freq(head_dim: int, rope_theta: float, factors: tuple[float, ...]) -> torch.Tensor:
    """theta_i / lambda_i in float32, in transformers' longrope op order."""
    ext = torch.tensor(factors, dtype=torch.float32)  # (D,)
    shape = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim  # (D,)
    return 1.0 / (ext * rope_theta**shape)


@register(LongRopeSpec, "LongRoPE: searched lambda_i per pair, n_hat start window, temperature")
def compute_longrope(spec: LongRopeSpec, seq_len: int | None = None) -> RopeFrequencies:
    factors = spec.long_factor if spec.uses_long(seq_len) else spec.short_factor
    return RopeFrequencies(scaled_inv_freq(spec.head_dim, spec.rope_theta, factors), spec.resolved_attention_factor())


def ramp_factors(n_pairs: int, start_pair: float, end_pair: float, low: float, high: float) -> tuple[float, ...]:
    """A monotone hand-made curve: ``low`` up to ``start_pair``, linear to ``high`` at ``end_pair``.

    Not a searched result; a starting point for the explorer and the demo.
    """
    if end_pair <= start_pair:
        fail("end_pair", end_pair, f"a pair index > start_pair={start_pair:g}")
    out = []
    for i in range(n_pairs):
        t = min(max((i - start_pair) / (end_pair - start_pair), 0.0), 1.0)
        out.append(round(low + t * (high - low), 4))
    return tuple(out)


def resample_factors(curve: Sequence[float], n_pairs: int) -> tuple[float, ...]:
    """A per-pair curve mapped onto another number of pairs (by relative pair position), kept monotone."""
    if len(curve) == n_pairs:
        return tuple(curve)
    x_old = np.linspace(0, 1, len(curve))
    out = np.interp(np.linspace(0, 1, n_pairs), x_old, curve)
    return tuple(round(float(v), 4) for v in np.maximum.accumulate(out))
