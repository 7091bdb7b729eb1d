"""What every RoPE method shares: the validated spec base class, its output, and the registry.

Notation: head dimension ``d = head_dim``, ``D = d/2`` frequency pairs, base
``b = rope_theta``, ``theta_i = b^(-2i/d)``, original context ``L0 =
original_max_position_embeddings``, extension ratio ``s = factor``, target length ``L = s * L0``.

Every method maps a spec (and, for length-dependent methods, the current sequence length) to an
``inv_freq`` vector for positions ``>= n_hat`` and an ``attention_factor`` that multiplies cos and
sin. Frequencies are computed in float32 in the same operation order as transformers, so a model
patched here and a stock model loaded from the exported config agree to the last bit.

Everything else a method knows lives on its spec class too (see "Hooks" below): how it reads and
writes a transformers config, its GGUF form and llama.cpp flags, its words, the explorer's controls
and a representative spec. The rest of the workbench asks the spec (or the registry) and never
branches on the method.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar

import torch

from .forms import GGUFForm, HFForm, NotExpressibleError
from .presence import ROLES, Control, Look

MAX_TARGET_LENGTH = 2**24  # float32 positions (the rotary embedding's dtype) are exact up to 2**24


class SpecError(ValueError):
    """A RoPE spec parameter is invalid; the message names the parameter, its value and what is allowed."""


def fail(param: str, value: Any, allowed: str) -> None:
    """Raise a SpecError in the project's one message shape."""
    shown = f"{value:g}" if isinstance(value, float) else repr(value)
    raise SpecError(f"{param}={shown} is not allowed: {allowed}")


@dataclass(frozen=True)
class RopeFrequencies:
    """The output of a method: per-pair inverse frequencies and the cos/sin multiplier."""

    inv_freq: torch.Tensor  # (D,) float32; used for positions >= n_hat
    attention_factor: float


@dataclass(frozen=True, kw_only=True)
class RopeSpec:
    """Base of every method's spec: the model's geometry (head_dim, rope_theta, L0) and the factor.

    Args:
        head_dim: rotary dimension ``d`` (even); for partial-rotary models the rotated part only.
        rope_theta: the base ``b``.
        original_max_position_embeddings: the pre-training context ``L0``.
        factor: extension ratio ``s = L / L0`` (>= 1). Use :func:`make_spec` to give a target
            length instead.
    """

    method: ClassVar[str] = ""
    words: ClassVar[str] = ""  # what the method does, in a few plain words (the doctor's summary)
    hf_rope_types: ClassVar[tuple[str, ...]] = ()  # transformers rope_types read as this method; [0] is written
    hf_keys: ClassVar[frozenset[str]] = frozenset()  # keys of the rope dict that rope_type accepts
    hf_original_from_max_position: ClassVar[bool] = False  # transformers reads L0 from max_position_embeddings
    # how it presents itself (presence.py): the explorer's controls, a short label, its curves' look, its place in
    # the teaching order (simplest first) and its roles ("compare", "seed": presence.ROLES)
    explorer_controls: ClassVar[tuple[Control, ...]] = ()
    label: ClassVar[str] = ""  # a short name for legends and tables ("PI", "YaRN"); "" for the method's name
    look: ClassVar[Look] = Look()
    teaching_rank: ClassVar[int] = 1000
    roles: ClassVar[frozenset[str]] = frozenset()
    head_dim: int
    rope_theta: float
    original_max_position_embeddings: int
    factor: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int) or self.head_dim < 2:
            fail("head_dim", self.head_dim, "an even integer >= 2")
        if self.head_dim % 2:
            fail("head_dim", self.head_dim, "an even integer: RoPE rotates pairs of dimensions")
        if self.head_dim > MAX_HEAD_DIM:
            fail("head_dim", self.head_dim, f"at most {MAX_HEAD_DIM} (real models rotate 32 to 512 dimensions)")
        if not _finite_positive(self.rope_theta) or self.rope_theta <= 1:
            fail("rope_theta", self.rope_theta, "a finite number > 1")
        if float(default_inv_freq(self.head_dim, float(self.rope_theta)).min()) < FLOAT32_TINY:
            fail("rope_theta", self.rope_theta, "a base whose slowest pair still turns in float32 (below about 1e37 "
                 "for this head_dim; real models use 1e4 to 1e8)")
        L0 = self.original_max_position_embeddings
        if isinstance(L0, bool) or not isinstance(L0, int) or L0 < 2:
            fail("original_max_position_embeddings", L0, "an integer >= 2")
        if not _finite_positive(self.factor):
            fail("factor", self.factor, "a finite number >= 1")
        if self.factor * L0 > MAX_TARGET_LENGTH:
            raise SpecError(
                f"target length {self.factor * L0:.0f} (factor={self.factor:g} x L0={L0}) is not allowed: at most "
                f"{MAX_TARGET_LENGTH} (2**24) tokens: positions are float32 in the rotary embedding, exact only up "
                "to 2**24")
        if self.factor < 1:
            raise SpecError(
                f"factor={self.factor:g} is not allowed: the target length "
                f"{self.target_length} is below original_max_position_embeddings={L0}; "
                "the target must be >= the original context"
            )
        object.__setattr__(self, "rope_theta", float(self.rope_theta))
        object.__setattr__(self, "factor", float(self.factor))

    # ---- derived geometry -------------------------------------------------------------------
    @property
    def n_pairs(self) -> int:
        """D = head_dim / 2."""
        return self.head_dim // 2

    @property
    def target_length(self) -> int:
        """L = round(factor * L0)."""
        return int(round(self.factor * self.original_max_position_embeddings))

    @property
    def n_hat(self) -> int:
        """Positions below this keep the original rotation (LongRoPE's start-token window, a field of its spec);
        0 for the other methods."""
        return 0

    @property
    def is_length_dependent(self) -> bool:
        """True when the frequencies depend on the current sequence length."""
        return False

    # ---- the method -------------------------------------------------------------------------
    def frequencies(self, seq_len: int | None = None) -> RopeFrequencies:
        """inv_freq and attention_factor for a sequence of ``seq_len`` tokens (None: the target)."""
        return get_method(self.method).compute(self, seq_len)

    def original_inv_freq(self) -> torch.Tensor:
        """theta_i, the unscaled inverse frequencies (float32, transformers' op order)."""
        return default_inv_freq(self.head_dim, self.rope_theta)

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :func:`spec_from_dict` turns back into an equal spec."""
        out: dict[str, Any] = {"method": self.method}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def spec_hash(self) -> str:
        """A short stable hash of the spec, for run folders."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line naming the method and its parameters."""
        params = {k: v for k, v in asdict(self).items() if k not in _SHARED_FIELDS}
        shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
        return (
            f"{self.method} (s={self.factor:g}, L0={self.original_max_position_embeddings}, "
            f"L={self.target_length}{', ' + shown if shown else ''})"
        )


    # ---- hooks: what the method knows beyond its maths (overridden by each method's file) ----------
    @classmethod
    def required_params(cls) -> list[str]:
        """Parameters without a default that :func:`make_spec` must be given."""
        return sorted(f.name for f in fields(cls) if f.init and f.default is MISSING
                      and f.default_factory is MISSING and f.name not in _SHARED_FIELDS)

    def params(self) -> dict[str, Any]:
        """The method's own parameters (everything but the geometry), as given to :func:`make_spec`."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _SHARED_FIELDS}

    @classmethod
    def from_hf(cls, params: dict[str, Any], *, geometry: dict[str, Any], factor: float) -> RopeSpec:
        """The spec a transformers rope dict of one of :attr:`hf_rope_types` describes.

        ``geometry`` holds head_dim, rope_theta and L0; ``factor`` is the config's (or implied) ratio.
        The default takes every rope key named like one of the spec's parameters.
        """
        names = {f.name for f in fields(cls)} - _SHARED_FIELDS
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()
                 if k in names and v is not None}
        return cls(**geometry, factor=factor, **given)

    def hf_form(self, allow_lossy: bool = False) -> HFForm:
        """This spec as transformers rope parameters.

        The default writes ``hf_rope_types[0]`` with the factor, L0 and every parameter named in
        :attr:`hf_keys`.

        Raises:
            NotExpressibleError: stock transformers cannot compute this spec (``allow_lossy=True``: a
                method may drop what it cannot carry and say so in the notes).
        """
        if not self.hf_rope_types:
            raise NotExpressibleError(f"no transformers form for method {self.method!r}")
        out: dict[str, Any] = {"rope_type": self.hf_rope_types[0]}
        if "factor" in self.hf_keys:
            out["factor"] = self.factor
        if "original_max_position_embeddings" in self.hf_keys and not self.hf_original_from_max_position:
            out["original_max_position_embeddings"] = self.original_max_position_embeddings
        for name, value in self.params().items():
            if name in self.hf_keys and value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        return HFForm(out, self.target_length, self.rope_theta)

    @classmethod
    def config_findings(cls, rope: dict[str, Any], *, max_pos: int | None, L0: int, head_dim: int,
                        spec: RopeSpec | None) -> list[tuple[str, str]]:
        """The doctor's method-specific (level, message) findings on a config's rope dict.

        ``max_pos`` is the config's max_position_embeddings, ``L0`` the original context, ``spec`` the
        spec read from the config (None if it is invalid).
        """
        return []

    def llama_cpp_flags(self) -> tuple[str | None, str]:
        """llama.cpp runtime flags (or the ``workbench export gguf`` command), and how far that is verified."""
        return None, f"llama.cpp has no equivalent of {self.method}"

    def gguf_form(self, architecture: str) -> GGUFForm:
        """What llama.cpp must read from a GGUF of ``architecture`` to compute this spec.

        Raises:
            NotExpressibleError: llama.cpp cannot compute it (the message says why).
        """
        raise NotExpressibleError(f"{self.method} has no GGUF export")

    def llama_cpp_equivalent(self) -> RopeSpec:
        """The spec under which transformers computes what this spec's GGUF computes in llama.cpp."""
        return self

    def without_attention_factor(self) -> RopeSpec:
        """The same frequencies with the attention factor set to 1 (methods without one: itself)."""
        return self

    # landmarks the diagnostics draw for every spec (a method with its own overrides them)
    def critical_pair(self) -> int:
        """The critical pair: the formula of :func:`critical_dimension`."""
        return critical_dimension(self.head_dim, self.rope_theta, self.original_max_position_embeddings)

    @classmethod
    def example_params(cls, like: RopeSpec) -> dict[str, Any]:
        """Parameters of a representative spec with ``like``'s geometry and factor (for figures that compare
        methods)."""
        return {}

    @classmethod
    def from_explorer(cls, geometry: dict[str, Any], values: dict[str, Any]) -> RopeSpec:
        """The spec the frequency explorer's controls describe.

        ``geometry`` holds head_dim, rope_theta, L0 and target_length; ``values`` every control by
        parameter name (and ``long_factor``, the drawn curve; ``enforce_monotone``).
        """
        return make_spec(cls.method, **geometry, **{c.name: values[c.name] for c in cls.explorer_controls})

    def explorer_note(self) -> str:
        """A line the explorer shows under the controls for this spec ("" for none)."""
        return ""

    @classmethod
    def display_name(cls) -> str:
        """The label, or the method's name."""
        return cls.label or cls.method

    def explorer_values(self) -> dict[str, Any] | None:
        """What loading this spec sets in the explorer; None keeps the explorer's own method."""
        return None

    def on_geometry(self, head_dim: int, rope_theta: float, original_max_position_embeddings: int
                    ) -> tuple[RopeSpec, str]:
        """The same method and s on another model's geometry, and a note on what had to be adapted."""
        spec = make_spec(self.method, head_dim=head_dim, rope_theta=rope_theta,
                         original_max_position_embeddings=original_max_position_embeddings, factor=self.factor,
                         **self.params())
        return spec, ""


# what every spec has: the model's geometry (head_dim, rope_theta, L0) and the extension ratio
_SHARED_FIELDS = {"head_dim", "rope_theta", "original_max_position_embeddings", "factor"}


def critical_dimension(head_dim: int, rope_theta: float, L0: int) -> int:
    """Theoretical critical pair: ``ceil(D * log_b(L0 / 2 pi)) - 1``.

    With ``x = D * log_b(L0 / 2 pi)``, pairs ``i < x`` complete a full turn within L0; this index is
    the last of them, so the searched range starts one pair below the first pair that never
    completed a turn. The paper notes the useful value sits lower in practice (high pairs are
    under-trained), hence LongRoPE2's ``critical_dim`` is a parameter.
    """
    D = head_dim // 2
    cd = math.ceil(D * math.log(L0 / (2 * math.pi)) / math.log(rope_theta)) - 1
    return min(max(cd, 1), D - 1)


def _short(value: Any) -> str:
    if isinstance(value, tuple):
        if len(value) <= 4:
            return "[" + ", ".join(f"{v:g}" for v in value) + "]"
        return f"[{value[0]:g} .. {value[-1]:g}] ({len(value)} values)"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def _finite_positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


MAX_HEAD_DIM = 65536
FLOAT32_TINY = 1.1754944e-38  # the smallest normal float32: an inv_freq below it is 0 or denormal


def default_inv_freq(head_dim: int, rope_theta: float) -> torch.Tensor:
    """theta_i = b^(-2i/d) in float32, computed exactly as transformers does."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim  # (D,)
    return 1.0 / (rope_theta**exponent)


# ---- registry ---------------------------------------------------------------------------------
ComputeFn = Callable[[Any, "int | None"], RopeFrequencies]


@dataclass(frozen=True)
class Method:
    """A registered method: its spec class, its compute function, and a one-line summary."""

    name: str
    spec_cls: type[RopeSpec]
    compute: ComputeFn
    summary: str


_REGISTRY: dict[str, Method] = {}


def register(spec_cls: type[RopeSpec], summary: str) -> Callable[[ComputeFn], ComputeFn]:
    """Decorator: register ``fn(spec, seq_len) -> RopeFrequencies`` as the method ``spec_cls.method``."""

    def deco(fn: ComputeFn) -> ComputeFn:
        _REGISTRY[spec_cls.method] = Method(spec_cls.method, spec_cls, fn, summary)
        return fn

    return deco


def unregister(name: str) -> None:
    """Remove the method ``name`` from the registry (for tests that register a method of their own)."""
    _REGISTRY.pop(name, None)


def method_for_rope_type(rope_type: str) -> type[RopeSpec] | None:
    """The spec class that reads a transformers ``rope_type`` (None: no registered method reads it)."""
    for name in available_methods():
        if rope_type in _REGISTRY[name].spec_cls.hf_rope_types:
            return _REGISTRY[name].spec_cls
    return None


def hf_rope_types() -> tuple[str, ...]:
    """The transformers rope_types the registered methods write (aliases such as "su" are read too)."""
    out: list[str] = []
    for name in available_methods():
        types = _REGISTRY[name].spec_cls.hf_rope_types
        if types and types[0] not in out:
            out.append(types[0])
    return tuple(out)


def get_method(name: str) -> Method:
    """The registered method called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SpecError(
            f"method={name!r} is not allowed: unknown RoPE method; known: {', '.join(available_methods())}"
        ) from None


def available_methods() -> list[str]:
    """Names of the registered methods, simplest first (each method's ``teaching_rank``, then its name)."""
    return sorted(_REGISTRY, key=lambda name: (_REGISTRY[name].spec_cls.teaching_rank, name))


def methods_with(role: str) -> list[str]:
    """The registered methods that take ``role`` (see ``presence.ROLES``), simplest first."""
    if role not in ROLES:
        raise SpecError(f"role={role!r} is not allowed: one of {sorted(ROLES)}")
    return [name for name in available_methods() if role in _REGISTRY[name].spec_cls.roles]


def make_spec(
    method: str,
    *,
    head_dim: int,
    rope_theta: float,
    original_max_position_embeddings: int,
    target_length: int | None = None,
    factor: float | None = None,
    **params: Any,
) -> RopeSpec:
    """Build the spec of ``method``, giving either ``target_length`` or ``factor``.

    Raises:
        SpecError: unknown method, unknown parameter, or any invalid value.
    """
    cls = get_method(method).spec_cls
    L0 = original_max_position_embeddings
    if isinstance(L0, bool) or not isinstance(L0, int) or L0 < 2:
        fail("original_max_position_embeddings", L0, "an integer >= 2")
    if target_length is not None and factor is not None:
        raise SpecError("give target_length or factor, not both")
    if target_length is not None:
        if isinstance(target_length, bool) or not isinstance(target_length, int) or target_length < 1:
            fail("target_length", target_length, "a positive integer")
        if isinstance(L0, int) and not isinstance(L0, bool) and L0 > 0 and target_length < L0:
            raise SpecError(
                f"target_length={target_length} is not allowed: it is below "
                f"original_max_position_embeddings={L0}; the target must be >= the original context"
            )
        factor = target_length / L0
    allowed = {f.name for f in fields(cls)}
    unknown = set(params) - allowed
    if unknown:
        raise SpecError(
            f"unknown parameter(s) {sorted(unknown)} for method {method!r}; allowed: "
            f"{sorted(allowed - _SHARED_FIELDS)}"
        )
    required = [name for name in cls.required_params() if name not in params]
    if required:
        hint = " (the per-pair factors; on the command line: --factors FILE)" if "long_factor" in required else ""
        raise SpecError(f"method {method!r} needs {', '.join(required)}{hint}")
    return cls(
        head_dim=head_dim,
        rope_theta=rope_theta,
        original_max_position_embeddings=L0,
        factor=1.0 if factor is None else factor,
        **params,
    )



def method_specs(like: RopeSpec, methods: Iterable[str], **overrides: dict) -> dict[str, RopeSpec]:
    """Representative specs of several methods (each method's ``example_params``, then ``overrides``) sharing
    ``like``'s geometry (head_dim, rope_theta, L0) and factor."""
    out = {}
    g = dict(head_dim=like.head_dim, rope_theta=like.rope_theta,
             original_max_position_embeddings=like.original_max_position_embeddings, factor=like.factor)
    for m in methods:
        params = {**get_method(m).spec_cls.example_params(like), **overrides.get(m, {})}
        out[m] = make_spec(m, **g, **params)
    return out


def spec_from_dict(data: dict[str, Any]) -> RopeSpec:
    """Inverse of :meth:`RopeSpec.to_dict`."""
    data = dict(data)
    method = data.pop("method", None)
    if method is None:
        raise SpecError("a spec dict needs a 'method' key")
    cls = get_method(method).spec_cls
    allowed = {f.name for f in fields(cls)}
    unknown = set(data) - allowed
    if unknown:
        raise SpecError(f"unknown key(s) {sorted(unknown)} for method {method!r}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
