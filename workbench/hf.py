"""The transformers boundary: read RoPE settings from a config, write them back, and explain them.

transformers 5 keeps RoPE settings in ``config.rope_parameters`` (``rope_type``, ``rope_theta``,
...); transformers 4 used ``config.rope_scaling`` plus a top-level ``rope_theta``. We read both
layouts and write either.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rope import (
    DefaultSpec,
    DynamicSpec,
    LinearSpec,
    Llama3Spec,
    LongRope2Spec,
    LongRopeSpec,
    NTKSpec,
    RopeSpec,
    SpecError,
    YarnSpec,
    make_spec,
    su_attention_factor,
    yarn_attention_factor,
)
from .rope.diagnostics import pair_diagnostics

HF_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")


class NotExpressibleError(ValueError):
    """The spec cannot be written as a stock transformers config without changing what it computes."""


class ConfigError(ValueError):
    """A model config could not be read (missing file, not JSON, not a RoPE model)."""


# ---- reading configs ---------------------------------------------------------------------------
def load_config_dict(source: Any) -> dict[str, Any]:
    """A plain dict from a config path (file or model folder), a dict, a transformers config or model.

    Raises:
        ConfigError: missing path, a file that is not JSON, or an object that is not a config.
    """
    if hasattr(source, "config") and hasattr(source, "named_modules"):  # a loaded model
        source = source.config
    if hasattr(source, "to_dict") and callable(source.to_dict):  # a transformers config
        return source.to_dict()
    if isinstance(source, dict):
        return dict(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise ConfigError(f"config path {str(path)!r} does not exist")
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{str(path)!r} is not a JSON config file: {e.msg} at line {e.lineno}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{str(path)!r} holds JSON {type(data).__name__}, not a config object")
        return data
    raise ConfigError(f"cannot read a config from {type(source).__name__}; give a path, dict, config or model")


@dataclass(frozen=True)
class RopeLayout:
    """Where a config keeps its RoPE settings, normalised."""

    params: dict[str, Any]  # the rope dict (rope_parameters or rope_scaling), with rope_type set
    layout: str  # "v5" (rope_parameters), "v4" (rope_scaling) or "none"
    rope_theta: float
    theta_source: str  # where rope_theta came from


_INT_KEYS = ("hidden_size", "num_attention_heads", "head_dim", "max_position_embeddings",
             "original_max_position_embeddings")
_ROPE_KEYS_COMMON = {"rope_type", "type", "rope_theta", "partial_rotary_factor"}
_ROPE_KEYS = {
    "default": set(),
    "linear": {"factor"},
    "dynamic": {"factor", "original_max_position_embeddings"},
    "yarn": {"factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow", "mscale",
             "mscale_all_dim", "truncate"},
    "llama3": {"factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"},
    "longrope": {"factor", "original_max_position_embeddings", "attention_factor", "short_factor", "long_factor"},
}
_ROPE_KEYS["su"] = _ROPE_KEYS["longrope"]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def config_value_errors(cfg: dict[str, Any]) -> list[str]:
    """What in a config's RoPE-related values has the wrong type; each entry names the key, value and what is allowed.

    Checked before any arithmetic, so a bad value is reported by name instead of failing somewhere inside.
    """
    errors = []
    for key in ("rope_parameters", "rope_scaling"):
        v = cfg.get(key)
        if v is not None and not isinstance(v, dict):
            errors.append(f"{key}={v!r} is not allowed: a dict such as {{\"rope_type\": \"linear\", \"factor\": 4.0}} "
                          "(or null)")
    for key in _INT_KEYS:
        v = cfg.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            errors.append(f"{key}={v!r} is not allowed: a positive integer")
    rope = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else (
        cfg.get("rope_scaling") if isinstance(cfg.get("rope_scaling"), dict) else {})
    where = "rope_parameters." if isinstance(cfg.get("rope_parameters"), dict) else "rope_scaling."
    for key, value, prefix in (("rope_theta", cfg.get("rope_theta"), ""), ("rope_theta", rope.get("rope_theta"), where),
                               ("partial_rotary_factor", cfg.get("partial_rotary_factor"), "")):
        if value is not None and not (_is_number(value) and value > 0):
            errors.append(f"{prefix}{key}={value!r} is not allowed: a finite number > 0")
    for key in ("factor", "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "low_freq_factor",
                "high_freq_factor", "partial_rotary_factor"):
        v = rope.get(key)
        if v is not None and not _is_number(v):
            errors.append(f"{where}{key}={v!r} is not allowed: a finite number")
    v = rope.get("original_max_position_embeddings")
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        errors.append(f"{where}original_max_position_embeddings={v!r} is not allowed: a positive integer")
    for key in ("short_factor", "long_factor"):
        v = rope.get(key)
        if v is not None and not (isinstance(v, list) and all(_is_number(x) for x in v)):
            errors.append(f"{where}{key}={v!r} is not allowed: a list of numbers, one per frequency pair")
    return errors


def unknown_rope_keys(cfg: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    """(where, unknown keys, allowed keys) of the config's RoPE dict for its rope_type (transformers ignores unknown ones)."""
    for where in ("rope_parameters", "rope_scaling"):
        rope = cfg.get(where)
        if isinstance(rope, dict):
            kind = rope.get("rope_type", rope.get("type", "default"))
            if kind not in _ROPE_KEYS:
                return where, [], []
            allowed = _ROPE_KEYS_COMMON | _ROPE_KEYS[kind]
            return where, sorted(set(rope) - allowed), sorted(allowed)
    return "", [], []


def read_layout(cfg: dict[str, Any]) -> RopeLayout:
    """Find the RoPE dict and theta in either layout.

    Raises:
        ConfigError: a RoPE value of the wrong type (the message names the key).
    """
    errors = config_value_errors(cfg)
    if errors:
        raise ConfigError("; ".join(errors))
    if isinstance(cfg.get("rope_parameters"), dict):
        params, layout = dict(cfg["rope_parameters"]), "v5"
    elif isinstance(cfg.get("rope_scaling"), dict):
        params, layout = dict(cfg["rope_scaling"]), "v4"
    else:
        params, layout = {}, "none"
    params["rope_type"] = params.get("rope_type", params.get("type", "default"))
    if "rope_theta" in params and params["rope_theta"] is not None:
        theta, source = float(params["rope_theta"]), f"{'rope_parameters' if layout == 'v5' else 'rope_scaling'}.rope_theta"
    elif cfg.get("rope_theta") is not None:
        theta, source = float(cfg["rope_theta"]), "rope_theta"
    else:
        theta, source = 10000.0, "transformers' default (10000; not in the config)"
    return RopeLayout(params, layout, theta, source)


def _head_dim(cfg: dict[str, Any], params: dict[str, Any]) -> int:
    head_dim = cfg.get("head_dim")
    if not head_dim:
        hidden, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
        if not hidden or not heads:
            raise ConfigError("config has neither head_dim nor hidden_size/num_attention_heads")
        head_dim = hidden // heads
    partial = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor")) or 1.0
    return int(head_dim * partial)


def is_rope_config(cfg: dict[str, Any]) -> bool:
    """Heuristic used only for error messages: does this config describe a RoPE model?"""
    return any(k in cfg for k in ("rope_parameters", "rope_scaling", "rope_theta")) or cfg.get(
        "model_type"
    ) in {"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "olmo", "olmo2"}


@dataclass(frozen=True)
class Geometry:
    """What every spec of a given model shares."""

    head_dim: int
    rope_theta: float
    original_max_position_embeddings: int


def model_geometry(source: Any) -> Geometry:
    """head_dim (rotary part), rope_theta and L0 of a model or config.

    L0 is ``original_max_position_embeddings`` where the config has one, else
    ``max_position_embeddings``.
    """
    cfg = load_config_dict(source)
    if not is_rope_config(cfg):
        raise ConfigError(
            f"config of model_type={cfg.get('model_type')!r} has no RoPE settings "
            "(no rope_parameters, rope_scaling or rope_theta): not a RoPE model"
        )
    lay = read_layout(cfg)
    L0 = lay.params.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings")
    if lay.params["rope_type"] == "dynamic" or not L0:
        L0 = cfg.get("max_position_embeddings")
    if not L0:
        raise ConfigError("config has no max_position_embeddings")
    return Geometry(_head_dim(cfg, lay.params), lay.rope_theta, int(L0))


def spec_for_model(source: Any, method: str, *, target_length: int | None = None,
                   factor: float | None = None, **params: Any) -> RopeSpec:
    """A new spec of ``method`` with the geometry of a model (or config)."""
    g = model_geometry(source)
    return make_spec(method, head_dim=g.head_dim, rope_theta=g.rope_theta,
                     original_max_position_embeddings=g.original_max_position_embeddings,
                     target_length=target_length, factor=factor, **params)


def spec_from_hf(source: Any) -> RopeSpec:
    """The spec a model or config currently uses (either layout).

    Raises:
        ConfigError: unreadable config; SpecError: unknown rope_type or invalid values.
    """
    cfg = load_config_dict(source)
    g = model_geometry(cfg)
    p = read_layout(cfg).params
    kind = p["rope_type"]
    base = dict(head_dim=g.head_dim, rope_theta=g.rope_theta,
                original_max_position_embeddings=g.original_max_position_embeddings)
    max_pos = cfg.get("max_position_embeddings") or g.original_max_position_embeddings
    factor = p.get("factor")
    if factor is None:
        factor = max_pos / g.original_max_position_embeddings
    if kind == "default":
        return DefaultSpec(**base)
    if kind == "linear":
        return LinearSpec(**base, factor=factor)
    if kind == "dynamic":
        return DynamicSpec(**base, factor=factor)
    if kind == "yarn":
        attention = p.get("attention_factor")
        mscale, mscale_all_dim = p.get("mscale"), p.get("mscale_all_dim")
        if attention is None and mscale and mscale_all_dim:
            def get_mscale(scale: float, m: float) -> float:
                return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
            attention = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
        return YarnSpec(**base, factor=factor, beta_fast=float(p.get("beta_fast") or 32),
                        beta_slow=float(p.get("beta_slow") or 1), attention_factor=attention,
                        truncate=bool(p.get("truncate", True)))
    if kind == "llama3":
        return Llama3Spec(**base, factor=factor, low_freq_factor=float(p.get("low_freq_factor", 1.0)),
                          high_freq_factor=float(p.get("high_freq_factor", 4.0)))
    if kind in ("longrope", "su"):
        attention = p.get("attention_factor")
        return LongRopeSpec(
            **base, factor=factor, long_factor=tuple(p.get("long_factor") or ()),
            short_factor=tuple(p.get("short_factor") or ()) or None,
            attention_policy="su" if attention is None else "constant", attention_factor=attention,
            enforce_monotone=False,
        )
    raise SpecError(f"rope_type={kind!r} is not allowed: supported: {', '.join(HF_ROPE_TYPES)}")


# ---- writing configs -----------------------------------------------------------------------------
@dataclass(frozen=True)
class HFExport:
    """A spec written for transformers.

    ``config_updates`` are the top-level keys to merge into a model's config.json;
    ``notes`` say what the export changed or could not carry.
    """

    rope_parameters: dict[str, Any]
    config_updates: dict[str, Any]
    layout: str
    notes: tuple[str, ...] = field(default=())

    def apply(self, config: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``config`` with this export merged in (stale keys of the other layout removed)."""
        out = {k: v for k, v in config.items() if k not in ("rope_scaling", "rope_parameters")}
        if self.layout == "v5":
            out.pop("rope_theta", None)
        if "original_max_position_embeddings" in config:  # Phi-3 keeps L0 at the top level too
            out["original_max_position_embeddings"] = self.rope_parameters.get(
                "original_max_position_embeddings", config["original_max_position_embeddings"]
            )
        out.update(self.config_updates)
        return out


def to_hf(spec: RopeSpec, layout: str = "v5", *, allow_lossy: bool = False) -> HFExport:
    """Write ``spec`` as transformers ``rope_parameters`` (v5) or ``rope_scaling`` (v4).

    Raises:
        NotExpressibleError: n_hat > 0 or dynamic YaRN, which stock transformers cannot compute;
            with ``allow_lossy=True`` they are dropped and a note says so.
    """
    if layout not in ("v5", "v4"):
        raise SpecError(f"layout={layout!r} is not allowed: 'v5' (rope_parameters) or 'v4' (rope_scaling)")
    notes: list[str] = []
    b, s = spec.rope_theta, spec.factor
    L0, L = spec.original_max_position_embeddings, spec.target_length
    max_pos = L
    if spec.start_window > 0:
        msg = (
            f"n_hat={spec.start_window}: stock transformers cannot keep the original rotation for the "
            "first n_hat positions (its rotary embedding has one inv_freq for all positions)"
        )
        if not allow_lossy:
            raise NotExpressibleError(msg + "; export with allow_lossy=True (--allow-lossy) to drop it, or run the model "
                                      "through workbench.patch")
        notes.append(msg + "; dropped from this export")
    if isinstance(spec, DefaultSpec):
        params: dict[str, Any] = {"rope_type": "default"}
        max_pos = L0
    elif isinstance(spec, NTKSpec):
        params = {"rope_type": "default"}
        b = spec.scaled_base
        notes.append(f"NTK-aware scaling is written as default RoPE with rope_theta = "
                     f"{spec.rope_theta:g} * {s:g}^({spec.head_dim}/{spec.head_dim - 2}) = {b:.6g}")
    elif isinstance(spec, LinearSpec):
        params = {"rope_type": "linear", "factor": s}
    elif isinstance(spec, DynamicSpec):
        params = {"rope_type": "dynamic", "factor": s}
        max_pos = L0
        notes.append("for rope_type='dynamic' transformers reads max_position_embeddings as the original "
                     f"length, so it is {L0} (not the target {L}); note that transformers keeps the "
                     "frequencies of the longest sequence seen until a sequence shorter than L0 arrives")
    elif isinstance(spec, YarnSpec):
        if spec.dynamic:
            msg = "dynamic YaRN (s from the current length) has no transformers rope_type"
            if not allow_lossy:
                raise NotExpressibleError(msg + "; export with allow_lossy=True to write static YaRN")
            notes.append(msg + "; written as static YaRN")
        params = {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": L0,
                  "beta_fast": spec.beta_fast, "beta_slow": spec.beta_slow}
        if spec.attention_factor is not None:
            params["attention_factor"] = spec.attention_factor
        if not spec.truncate:
            params["truncate"] = False
    elif isinstance(spec, Llama3Spec):
        params = {"rope_type": "llama3", "factor": s, "original_max_position_embeddings": L0,
                  "low_freq_factor": spec.low_freq_factor, "high_freq_factor": spec.high_freq_factor}
    elif isinstance(spec, LongRopeSpec):
        params = {"rope_type": "longrope", "factor": s, "original_max_position_embeddings": L0,
                  "short_factor": list(spec.short_factor), "long_factor": list(spec.long_factor)}
        if spec.attention_policy != "su":  # "su" is what transformers derives from factor
            params["attention_factor"] = spec.resolved_attention_factor()
        if isinstance(spec, LongRope2Spec):
            notes.append(f"LongRoPE2 (critical_dim={spec.critical_dim}) is written as rope_type='longrope' "
                         "with the full per-pair long_factor")
        if spec.resolved_attention_factor() != 1.0:
            notes.append(f"transformers applies attention_factor={spec.resolved_attention_factor():.4f} to "
                         "every sequence, also those <= original_max_position_embeddings")
    else:
        raise NotExpressibleError(f"no transformers form for method {spec.method!r}")
    if layout == "v5":
        params = {**params, "rope_theta": b}
        updates: dict[str, Any] = {"rope_parameters": params, "max_position_embeddings": max_pos}
    else:
        scaling = None if params["rope_type"] == "default" else {**params, "type": params["rope_type"]}
        updates = {"rope_scaling": scaling, "rope_theta": b, "max_position_embeddings": max_pos}
        if scaling and "original_max_position_embeddings" in scaling and scaling["rope_type"] == "longrope":
            updates["original_max_position_embeddings"] = L0  # Phi-3 style, read at the top level
    return HFExport(params, updates, layout, tuple(notes))


def export_config(spec: RopeSpec, base_config: Any, layout: str = "v5", *,
                  allow_lossy: bool = False) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A full config dict: ``base_config`` with ``spec`` written into it, and the export notes.

    Raises:
        ConfigError: ``base_config`` describes a model without rotary embeddings (nothing would read the
            RoPE settings written into it).
    """
    base = load_config_dict(base_config)
    if base and not is_rope_config(base):
        raise ConfigError(
            f"base config of model_type={base.get('model_type')!r} has no rotary embeddings (no rope_parameters, "
            "rope_scaling or rope_theta): rope_parameters written into it would be ignored; give a RoPE model's config")
    exp = to_hf(spec, layout, allow_lossy=allow_lossy)
    return exp.apply(base), exp.notes


def hf_config_from_dict(cfg: dict[str, Any]):
    """A transformers config object for a config dict (its model_type picks the class)."""
    from transformers import AutoConfig

    data = dict(cfg)
    model_type = data.pop("model_type", None)
    if model_type is None:
        raise ConfigError("config has no model_type")
    for k in ("transformers_version", "architectures_auto"):
        data.pop(k, None)
    return AutoConfig.for_model(model_type, **data)


# ---- the config doctor ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    level: str  # "error", "warning" or "note"
    message: str


@dataclass(frozen=True)
class DoctorReport:
    """What the doctor found: words, numbers, findings, and the equivalent serving flags."""

    summary: str
    numbers: dict[str, Any]
    findings: tuple[Finding, ...]
    vllm: str | None
    vllm_reason: str
    llama_cpp: str | None
    llama_cpp_reason: str
    stock: dict[str, Any] = field(default_factory=dict)  # what stock transformers' own config class says

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "numbers": self.numbers,
                "findings": [f.__dict__ for f in self.findings], "vllm": self.vllm,
                "vllm_reason": self.vllm_reason, "llama_cpp": self.llama_cpp,
                "llama_cpp_reason": self.llama_cpp_reason, "stock_transformers": self.stock}

    def __str__(self) -> str:
        lines = [self.summary, ""]
        width = max((len(k) for k in self.numbers), default=0)
        lines += [f"  {k:<{width}}  {v}" for k, v in self.numbers.items()]
        lines.append("")
        if self.findings:
            lines += [f"  [{f.level}] {f.message}" for f in self.findings]
        else:
            lines.append("  no inconsistencies found")
        if self.stock:
            lines += ["", f"stock transformers {self.stock['version']}: {self.stock['verdict']}"]
            if self.stock.get("repaired") is not None:
                lines.append("  repaired (accepted): " + json.dumps(self.stock["repaired"]))
        lines += ["", "vLLM:      " + (self.vllm or f"(not expressible) {self.vllm_reason}")]
        if self.vllm and self.vllm_reason:
            lines.append("           " + self.vllm_reason)
        lines.append("llama.cpp: " + (self.llama_cpp or f"(not expressible) {self.llama_cpp_reason}"))
        if self.llama_cpp and self.llama_cpp_reason:
            lines.append("           " + self.llama_cpp_reason)
        return "\n".join(lines)


_WORDS = {
    "default": "plain RoPE without rescaling",
    "linear": "position interpolation (every frequency divided by the factor)",
    "ntk": "NTK-aware base change",
    "dynamic": "dynamic NTK (base grows with the current length beyond the original context)",
    "yarn": "YaRN (high frequencies kept, low ones interpolated, attention temperature)",
    "llama3": "Llama-3 scaling (short wavelengths kept, long ones divided by the factor)",
    "longrope": "LongRoPE (per-pair factors; short_factor up to L0, long_factor beyond)",
}


def stock_transformers_check(cfg: dict[str, Any]) -> tuple[bool, str, list[str]]:
    """Build ``cfg`` with stock transformers' own config class: (accepted, why not, the warnings it logged).

    transformers validates RoPE settings when a config object is made; some problems it refuses outright,
    others it only logs (and then computes something else than the config says).
    """
    import logging

    import transformers

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if msg not in records:
                records.append(msg)

    logger = logging.getLogger("transformers")
    handler = Collect(level=logging.WARNING)
    logger.addHandler(handler)
    transformers.utils.logging.disable_default_handler()  # the doctor reports these itself
    try:
        hf_config_from_dict(cfg)
    except Exception as e:  # noqa: BLE001 - any refusal by transformers is the finding
        text = " ".join(str(e).split())
        return False, f"{type(e).__name__}: {text[:300]}", records
    finally:
        logger.removeHandler(handler)
        transformers.utils.logging.enable_default_handler()
    return True, "", records


def _stock_verdict(cfg: dict[str, Any], spec: RopeSpec | None, add: Any) -> dict[str, Any]:
    """The doctor's stock-transformers check; a refusal comes with the repaired config that it accepts."""
    import transformers

    version = transformers.__version__
    if cfg.get("model_type") is None:
        return {"version": version, "verdict": "not tried (the config has no model_type)", "accepted": None}
    accepted, why, warned = stock_transformers_check(cfg)
    rope_warnings = [w for w in warned if "rope" in w.lower() or "factor" in w.lower()]
    out: dict[str, Any] = {"version": version, "accepted": accepted, "warnings": rope_warnings, "repaired": None}
    repaired = None
    if spec is not None and (not accepted or rope_warnings):
        try:
            full, _ = export_config(spec, cfg, "v5", allow_lossy=True)
            ok, _, again = stock_transformers_check(full)
            if ok and not [w for w in again if "rope" in w.lower() or "factor" in w.lower()]:
                repaired = {k: full[k] for k in ("rope_parameters", "max_position_embeddings") if k in full}
        except (NotExpressibleError, SpecError, ConfigError):
            repaired = None
    out["repaired"] = repaired
    fix = (f"; repaired, it accepts: {json.dumps(repaired)}" if repaired is not None
           else "; no repaired config: fix the values named above first")
    if not accepted:
        out["verdict"] = f"REFUSES this config ({why})"
        add("error", f"stock transformers {version} refuses this config ({why}){fix}")
    elif rope_warnings:
        out["verdict"] = "accepts this config with warnings: " + "; ".join(rope_warnings)
        add("warning", f"stock transformers {version} accepts this config but warns: {'; '.join(rope_warnings)}"
                       f"{fix if repaired is not None else ''}")
    else:
        out["verdict"] = "accepts this config"
    return out


def doctor(source: Any) -> DoctorReport:
    """Explain a model config's RoPE setting and flag what is inconsistent.

    Raises:
        ConfigError: the config cannot be read or is not a RoPE model.
    """
    cfg = load_config_dict(source)
    findings: list[Finding] = []

    def add(level: str, msg: str) -> None:
        findings.append(Finding(level, msg))

    errors = config_value_errors(cfg)
    if errors:
        for e in errors:
            add("error", e)
        stock = _stock_verdict(cfg, None, add)
        return DoctorReport("RoPE settings with values of the wrong type (see findings)", {}, tuple(findings), None,
                            "invalid config", None, "invalid config", stock)
    lay = read_layout(cfg)
    p = lay.params
    kind = p["rope_type"]
    where, unknown, allowed = unknown_rope_keys(cfg)
    if unknown:
        add("warning", f"unknown key(s) {unknown} in {where} for rope_type={kind!r}: transformers ignores them "
                       f"(allowed: {allowed})")

    # layout
    if lay.layout == "v4":
        add("note", "legacy transformers-4 layout (rope_scaling + top-level rope_theta); transformers 5 "
                    "reads it and saves it back as rope_parameters")
    if "rope_parameters" in cfg and isinstance(cfg.get("rope_scaling"), dict):
        if {k: v for k, v in cfg["rope_scaling"].items() if k != "type"} != {
            k: v for k, v in cfg["rope_parameters"].items() if k not in ("rope_theta", "type")
        }:
            add("warning", "both rope_parameters and rope_scaling are present and differ; transformers 5 "
                           "uses rope_scaling when both are given to a config class")
    if "type" in p and "rope_type" in p and p["type"] != p["rope_type"]:
        add("warning", f"'type'={p['type']!r} and 'rope_type'={p['rope_type']!r} disagree; transformers uses rope_type")
    elif "type" in p and lay.params.get("rope_type") == p["type"] and lay.layout != "none" and "rope_type" not in (
        cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    ):
        add("note", "uses the old key 'type'; transformers reads it as 'rope_type'")
    if lay.layout == "v5" and cfg.get("rope_theta") is not None and p.get("rope_theta") is not None and float(
        cfg["rope_theta"]
    ) != float(p["rope_theta"]):
        add("warning", f"top-level rope_theta={cfg['rope_theta']} differs from rope_parameters.rope_theta="
                       f"{p['rope_theta']}; transformers 5 uses the one in rope_parameters")
    if lay.theta_source.startswith("transformers' default"):
        add("note", "rope_theta is not set; transformers assumes 10000")

    if kind not in HF_ROPE_TYPES and kind != "su":
        add("error", f"rope_type={kind!r} is not one of {HF_ROPE_TYPES}")
        stock = _stock_verdict(cfg, None, add)
        return DoctorReport(f"RoPE type {kind!r} (unknown; supported: {', '.join(HF_ROPE_TYPES)})", {},
                            tuple(findings), None,
                            "unknown rope_type", None, "unknown rope_type", stock)

    spec = None
    try:
        spec = spec_from_hf(cfg)
    except SpecError as e:
        add("error", str(e))
    g = model_geometry(cfg)
    D = g.head_dim // 2
    max_pos = cfg.get("max_position_embeddings")
    L0 = g.original_max_position_embeddings
    numbers: dict[str, Any] = {
        "rope_type": kind, "layout": {"v5": "rope_parameters (v5)", "v4": "rope_scaling (v4)",
                                      "none": "no rope dict (default)"}[lay.layout],
        "rope_theta": f"{lay.rope_theta:g} (from {lay.theta_source})",
        "head_dim (rotary)": f"{g.head_dim} ({D} frequency pairs)",
        "original context L0": L0, "max_position_embeddings": max_pos,
    }

    # factor vs lengths
    factor = p.get("factor")
    if kind in ("linear", "dynamic", "yarn", "llama3", "longrope", "su"):
        if factor is not None and (not isinstance(factor, (int, float)) or factor < 1):
            add("error", f"factor={factor!r} must be a number >= 1")
        implied = max_pos / L0 if max_pos and L0 else None
        if kind in ("yarn", "llama3", "longrope", "su") and factor is not None and implied not in (None, 1.0) \
                and not math.isclose(factor, implied, rel_tol=1e-3):
            add("warning", f"factor={factor:g} but max_position_embeddings / original_max_position_embeddings = "
                           f"{max_pos}/{L0} = {implied:g}; transformers uses factor")
        if kind in ("yarn", "llama3", "longrope", "su") and not (
            p.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings")
        ):
            add("warning", f"{kind} without original_max_position_embeddings: transformers falls back to "
                           f"max_position_embeddings={max_pos}, so the implied factor is 1")
        if kind == "linear" and factor and max_pos and max_pos <= L0 and factor > 1:
            add("note", f"linear factor {factor:g} but max_position_embeddings is still {max_pos}; the model "
                        f"can read {int(max_pos * factor)} tokens")
        if kind == "dynamic":
            add("note", f"for dynamic NTK transformers treats max_position_embeddings={max_pos} as the original "
                        "length and keeps the largest length's frequencies until a short sequence resets them")
    if kind in ("longrope", "su"):
        for name in ("short_factor", "long_factor"):
            vals = p.get(name)
            if vals is None:
                add("error", f"longrope needs {name}")
            elif len(vals) != D:
                add("error", f"{name} has {len(vals)} values; head_dim {g.head_dim} needs {D}")
            elif any(b < a for a, b in zip(vals, vals[1:], strict=False)):
                add("note", f"{name} is not monotone (the LongRoPE search keeps factors non-decreasing)")
        if spec is not None:
            a = spec.frequencies(L0).attention_factor
            if a != 1.0:
                add("warning", f"attention_factor {a:.4f} is also applied to inputs <= L0={L0} (transformers "
                               "multiplies cos/sin by it at every length); short-context quality depends on "
                               "short_factor having been chosen with it")

    if spec is not None:
        d = pair_diagnostics(spec)
        numbers.update({
            "factor s": f"{spec.factor:g}", "target length L": spec.target_length,
            "attention factor": f"{d.attention_factor:.4f}",
            "critical pair (SPEC formula)": d.critical_dim,
            "pairs with < 1 turn in L0": int((d.max_angle_trained < 2 * math.pi).sum()),
            "pairs out of distribution at L": int(d.out_of_distribution.sum()),
            "effective factor range": f"{d.effective_factor.min():.3f} .. {d.effective_factor.max():.3f}",
        })
        summary = (f"{_WORDS.get(kind, kind)}: head_dim {g.head_dim}, base {lay.rope_theta:g}, "
                   f"L0 {L0} -> {spec.target_length} tokens (s = {spec.factor:g})")
    else:
        summary = f"{_WORDS.get(kind, kind)} (invalid: see findings)"
    stock = _stock_verdict(cfg, spec, add)
    vllm, vllm_reason = _vllm_overrides(spec) if spec is not None else (None, "invalid config")
    cpp, cpp_reason = _llama_cpp_flags(spec) if spec is not None else (None, "invalid config")
    return DoctorReport(summary, numbers, tuple(findings), vllm, vllm_reason, cpp, cpp_reason, stock)


def _vllm_overrides(spec: RopeSpec) -> tuple[str | None, str]:
    """vLLM ``--hf-overrides`` JSON (v4 rope_scaling keys, read by vLLM's config loader)."""
    try:
        exp = to_hf(spec, "v4")
    except NotExpressibleError as e:
        return None, str(e)
    over = {k: v for k, v in exp.config_updates.items() if v is not None}
    flags = f"--hf-overrides '{json.dumps(over)}' --max-model-len {spec.target_length}"
    return flags, "; ".join(exp.notes)


# What tests/test_llamacpp.py checks by running llama.cpp (llama-cpp-python 0.3.36) against transformers
# on SmolLM2-135M (Llama architecture, Q4_1 GGUF).
LLAMA_CPP_VERIFIED = ("verified by execution on a Llama GGUF: llama.cpp reproduces transformers' perplexity "
                      "(tests/test_llamacpp.py, SmolLM2 beyond L0)")


def _export_gguf_command(spec: RopeSpec) -> str:
    cmd = f"workbench export gguf --model model.gguf --method {spec.method} --target {spec.target_length}"
    if isinstance(spec, LongRopeSpec):
        cmd += " --factors factors.json"
    return cmd + f" --out model-{spec.method}.gguf"


def _llama_cpp_flags(spec: RopeSpec) -> tuple[str | None, str]:
    """llama.cpp runtime flags or the `workbench export gguf` command, and whether execution verified it."""
    s, L, L0 = spec.factor, spec.target_length, spec.original_max_position_embeddings
    if spec.start_window > 0:
        return None, "llama.cpp has no start-token window (n_hat)"
    if isinstance(spec, DefaultSpec):
        return f"-c {L0} --rope-freq-base {spec.rope_theta:g}", LLAMA_CPP_VERIFIED
    if isinstance(spec, NTKSpec):
        return f"-c {L} --rope-freq-base {spec.scaled_base:.6g}", "NTK-aware = a larger base (not verified by execution)"
    if isinstance(spec, LinearSpec):
        return f"-c {L} --rope-scaling linear --rope-scale {s:g}", "not verified by execution"
    if isinstance(spec, YarnSpec) and not spec.dynamic:
        flags = (f"-c {L} --rope-scaling yarn --rope-scale {s:g} --yarn-orig-ctx {L0} "
                 f"--yarn-beta-fast {spec.beta_fast:g} --yarn-beta-slow {spec.beta_slow:g}")
        if spec.attention_factor is not None and not math.isclose(spec.attention_factor, yarn_attention_factor(s)):
            # llama.cpp overwrites the runtime yarn_attn_factor when YaRN is on and multiplies cos/sin by
            # (0.1 ln s + 1) * <arch>.rope.scaling.attn_factor; only the GGUF key carries a custom factor
            ratio = spec.attention_factor / yarn_attention_factor(s)
            return (flags + f" --override-kv llama.rope.scaling.attn_factor=float:{ratio:.6g}",
                    f"or {_export_gguf_command(spec)}; --yarn-attn-factor would be ignored (llama.cpp recomputes "
                    "it when YaRN is on)")
        return flags, LLAMA_CPP_VERIFIED + "; the same as " + _export_gguf_command(spec)
    if isinstance(spec, Llama3Spec):
        return _export_gguf_command(spec), ("llama.cpp has no runtime flag for llama3 scaling; the GGUF carries it "
                                            "as rope_freqs.weight (Llama GGUFs; not verified by execution)")
    if isinstance(spec, LongRopeSpec):
        if any(x != 1.0 for x in spec.short_factor):
            return None, ("a Llama GGUF cannot switch short/long factors by sequence length (llama.cpp picks "
                          "rope_factors_long/short by the context size); export the long factors alone")
        return _export_gguf_command(spec), ("per-pair factors as rope_freqs.weight and the attention factor as "
                                            "llama.rope.scaling.attn_factor; " + LLAMA_CPP_VERIFIED)
    return None, f"llama.cpp has no equivalent of {spec.method}" + (" (dynamic)" if isinstance(spec, (DynamicSpec, YarnSpec)) else "")


__all__ = [
    "ConfigError", "DoctorReport", "Finding", "Geometry", "HFExport", "NotExpressibleError", "doctor",
    "export_config", "hf_config_from_dict", "load_config_dict", "model_geometry", "spec_for_model",
    "spec_from_hf", "su_attention_factor", "to_hf",
]
