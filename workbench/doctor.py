"""The config doctor: what a model config's RoPE setting does, what is inconsistent in it, and how to serve it.

The doctor is a list of small checks. Each takes the :class:`Checkup` of one config and returns its
findings; method-specific ones come from the method itself (``RopeSpec.config_findings``), the serving
flags from ``RopeSpec.llama_cpp_flags`` and the transformers export (vLLM reads the same keys).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .hf import (
    RESCALED_TYPE,
    ConfigError,
    Geometry,
    LayerTypeRopeError,
    NotExpressibleError,
    RopeLayout,
    config_value_errors,
    export_config,
    hf_config_from_dict,
    layer_type_summary,
    load_config_dict,
    model_geometry,
    read_layout,
    spec_from_hf,
    to_hf,
    unknown_rope_keys,
)
from .rope import RopeSpec, SpecError, hf_rope_types, method_for_rope_type
from .rope.diagnostics import pair_diagnostics


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


@dataclass(frozen=True)
class Checkup:
    """One config as the checks see it: the raw dict, its layout, the method reading it and its spec."""

    cfg: dict[str, Any]
    layout: RopeLayout
    geometry: Geometry
    method: type[RopeSpec]
    spec: RopeSpec | None

    @property
    def rope(self) -> dict[str, Any]:
        return self.layout.params

    @property
    def kind(self) -> str:
        return self.layout.params["rope_type"]

    @property
    def max_pos(self) -> int | None:
        return self.cfg.get("max_position_embeddings")


Check = Callable[[dict[str, Any], RopeLayout], list[Finding]]
SpecCheck = Callable[[Checkup], list[Finding]]


# ---- checks of the layout (any rope_type) -------------------------------------------------------------
def check_unknown_keys(cfg: dict[str, Any], lay: RopeLayout) -> list[Finding]:
    where, unknown, allowed = unknown_rope_keys(cfg)
    if not unknown:
        return []
    return [Finding("warning", f"unknown key(s) {unknown} in {where} for rope_type={lay.params['rope_type']!r}: "
                               f"transformers ignores them (allowed: {allowed})")]


def check_legacy_layout(cfg: dict[str, Any], lay: RopeLayout) -> list[Finding]:
    if lay.layout != "v4":
        return []
    return [Finding("note", "legacy transformers-4 layout (rope_scaling + top-level rope_theta); transformers 5 "
                            "reads it and saves it back as rope_parameters")]


def check_both_layouts(cfg: dict[str, Any], lay: RopeLayout) -> list[Finding]:
    if "rope_parameters" not in cfg or not isinstance(cfg.get("rope_scaling"), dict):
        return []
    scaling = {k: v for k, v in cfg["rope_scaling"].items() if k != "type"}
    if scaling == {k: v for k, v in cfg["rope_parameters"].items() if k not in ("rope_theta", "type")}:
        return []
    return [Finding("warning", "both rope_parameters and rope_scaling are present and differ; transformers 5 "
                               "uses rope_scaling when both are given to a config class")]


def check_type_key(cfg: dict[str, Any], lay: RopeLayout) -> list[Finding]:
    p = lay.params
    if "type" in p and "rope_type" in p and p["type"] != p["rope_type"]:
        return [Finding("warning", f"'type'={p['type']!r} and 'rope_type'={p['rope_type']!r} disagree; transformers "
                                   "uses rope_type")]
    written = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if "type" in p and p.get("rope_type") == p["type"] and lay.layout != "none" and "rope_type" not in written:
        return [Finding("note", "uses the old key 'type'; transformers reads it as 'rope_type'")]
    return []


def check_theta(cfg: dict[str, Any], lay: RopeLayout) -> list[Finding]:
    p, out = lay.params, []
    if lay.layout == "v5" and cfg.get("rope_theta") is not None and p.get("rope_theta") is not None and float(
            cfg["rope_theta"]) != float(p["rope_theta"]):
        out.append(Finding("warning", f"top-level rope_theta={cfg['rope_theta']} differs from "
                                      f"rope_parameters.rope_theta={p['rope_theta']}; transformers 5 uses the one in "
                                      "rope_parameters"))
    if lay.theta_source.startswith("transformers' default"):
        out.append(Finding("note", "rope_theta is not set; transformers assumes 10000"))
    return out


def check_layer_types(cfg: dict[str, Any], lay: RopeLayout) -> list[Finding]:
    if not lay.kept_types:
        return []
    return [Finding("note", f"{layer_type_summary(cfg)}: the method below is that of the {RESCALED_TYPE} layers; "
                            "an export rewrites only them, and the runtime flags below rescale every layer")]


LAYOUT_CHECKS: tuple[Check, ...] = (check_unknown_keys, check_legacy_layout, check_both_layouts, check_type_key,
                                    check_theta, check_layer_types)


# ---- checks of the rope_type's values ------------------------------------------------------------------
def check_factor(c: Checkup) -> list[Finding]:
    factor = c.rope.get("factor")
    if "factor" not in c.method.hf_keys or factor is None or (isinstance(factor, (int, float)) and factor >= 1):
        return []
    return [Finding("error", f"factor={factor!r} must be a number >= 1")]


def _reads_original(c: Checkup) -> bool:
    """Whether transformers reads L0 from original_max_position_embeddings for this rope_type."""
    keys = c.method.hf_keys
    return "factor" in keys and "original_max_position_embeddings" in keys and not c.method.hf_original_from_max_position


def check_implied_factor(c: Checkup) -> list[Finding]:
    factor, max_pos, L0 = c.rope.get("factor"), c.max_pos, c.geometry.original_max_position_embeddings
    implied = max_pos / L0 if max_pos and L0 else None
    if not _reads_original(c) or factor is None or implied in (None, 1.0) or math.isclose(factor, implied, rel_tol=1e-3):
        return []
    return [Finding("warning", f"factor={factor:g} but max_position_embeddings / original_max_position_embeddings = "
                               f"{max_pos}/{L0} = {implied:g}; transformers uses factor")]


def check_original_given(c: Checkup) -> list[Finding]:
    key = "original_max_position_embeddings"
    if not _reads_original(c) or c.rope.get(key) or c.cfg.get(key):
        return []
    return [Finding("warning", f"{c.kind} without original_max_position_embeddings: transformers falls back to "
                               f"max_position_embeddings={c.max_pos}, so the implied factor is 1")]


def check_method(c: Checkup) -> list[Finding]:
    """The method's own findings (factor lists, notes on how transformers applies it)."""
    found = c.method.config_findings(c.rope, max_pos=c.max_pos, L0=c.geometry.original_max_position_embeddings,
                                     head_dim=c.geometry.head_dim, spec=c.spec)
    return [Finding(level, message) for level, message in found]


COLLAPSE_RAD = 0.005  # neighbouring positions closer than this in every pair: one angle to the model


def _factors(spec: RopeSpec, length: int) -> Any:
    """Each pair's effective factor theta_i / inv_freq_i for a sequence of ``length`` tokens (float64)."""
    return spec.original_inv_freq().double() / spec.frequencies(length).inv_freq.double()


def check_factor_readability(c: Checkup) -> list[Finding]:
    """Whether a model could read the positions this setting gives it: pairs turned faster than trained, positions
    collapsed onto one angle, pairs slowed far beyond the extension, within L0 and at the target length."""
    spec, out = c.spec, []
    if spec is None:
        return []
    L0, L = spec.original_max_position_embeddings, spec.target_length
    theta = spec.original_inv_freq().double()
    regimes = [("within L0", L0)] + ([(f"at L = {L}", L)] if L > L0 else [])
    for where, length in regimes:
        f = _factors(spec, length)
        fast = f < 1 - 1e-6
        if bool(fast.any()):
            worst = float(f.min())
            out.append(Finding(
                "error" if worst < 0.5 else "warning",
                f"{int(fast.sum())} of {len(f)} pairs turn faster than trained {where} (factor as low as {worst:.3g}): "
                f"from position {max(1, int(worst * L0))} on, they reach angles they never had in training, and every "
                f"distance reads {1 / worst:.3g}x farther than it is" + (
                    ": the model cannot read positions it was trained on" if worst < 0.5 else "")))
        step = float((theta / f).max())  # radians between neighbouring positions in the fastest pair
        if step < COLLAPSE_RAD:
            out.append(Finding(
                "error", f"positions collapse {where}: even the fastest pair moves only {step:.2g} rad per token "
                         f"(factors from {float(f.min()):.3g}), so neighbouring positions share one angle to within the "
                         f"model's resolution (~{COLLAPSE_RAD} rad): it cannot tell nearby tokens apart"))
        elif length > L0 and float(f.max()) > 2 * spec.factor + 1e-9:
            out.append(Finding(
                "warning", f"factors up to {float(f.max()):.3g} {where} where s = {spec.factor:g}: beyond 2s (LongRoPE2's "
                           "bound on its search), those pairs are slowed more than the extension needs and their "
                           "positions crowd together"))
    return out


SPEC_CHECKS: tuple[SpecCheck, ...] = (check_factor, check_implied_factor, check_original_given, check_method,
                                      check_factor_readability)


# ---- what stock transformers says -----------------------------------------------------------------------
def _rope_warnings(records: list[str]) -> list[str]:
    return [w for w in records if "rope" in w.lower() or "factor" in w.lower()]


def stock_transformers_check(cfg: dict[str, Any]) -> tuple[bool, str, list[str]]:
    """Build ``cfg`` with stock transformers' own config class: (accepted, why not, the warnings it logged).

    transformers validates RoPE settings when a config object is made; some problems it refuses outright,
    others it only logs (and then computes something else than the config says).
    """
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


def _repaired(cfg: dict[str, Any], spec: RopeSpec) -> dict[str, Any] | None:
    """The spec exported into ``cfg``, if stock transformers accepts that without rope warnings."""
    try:
        full, _ = export_config(spec, cfg, "v5", allow_lossy=True)
    except (NotExpressibleError, SpecError, ConfigError):
        return None
    ok, _, again = stock_transformers_check(full)
    if not ok or _rope_warnings(again):
        return None
    return {k: full[k] for k in ("rope_parameters", "max_position_embeddings") if k in full}


def stock_verdict(cfg: dict[str, Any], spec: RopeSpec | None) -> tuple[dict[str, Any], list[Finding]]:
    """The stock-transformers check and its finding; a refusal comes with the repaired config that it accepts."""
    import transformers

    version = transformers.__version__
    if cfg.get("model_type") is None:
        return {"version": version, "verdict": "not tried (the config has no model_type)", "accepted": None}, []
    accepted, why, warned = stock_transformers_check(cfg)
    rope_warnings = _rope_warnings(warned)
    repaired = _repaired(cfg, spec) if spec is not None and (not accepted or rope_warnings) else None
    out: dict[str, Any] = {"version": version, "accepted": accepted, "warnings": rope_warnings, "repaired": repaired}
    fix = (f"; repaired, it accepts: {json.dumps(repaired)}" if repaired is not None
           else "; no repaired config: fix the values named above first")
    if not accepted:
        out["verdict"] = f"REFUSES this config ({why})"
        return out, [Finding("error", f"stock transformers {version} refuses this config ({why}){fix}")]
    if rope_warnings:
        out["verdict"] = "accepts this config with warnings: " + "; ".join(rope_warnings)
        return out, [Finding("warning", f"stock transformers {version} accepts this config but warns: "
                                        f"{'; '.join(rope_warnings)}{fix if repaired is not None else ''}")]
    out["verdict"] = "accepts this config"
    return out, []


# ---- serving flags --------------------------------------------------------------------------------------
def vllm_flags(spec: RopeSpec) -> tuple[str | None, str]:
    """vLLM ``--hf-overrides`` JSON (v4 rope_scaling keys, read by vLLM's config loader)."""
    try:
        exp = to_hf(spec, "v4")
    except NotExpressibleError as e:
        return None, str(e)
    over = {k: v for k, v in exp.config_updates.items() if v is not None}
    flags = f"--hf-overrides '{json.dumps(over)}' --max-model-len {spec.target_length}"
    return flags, "; ".join(exp.notes)


def llama_cpp_flags(spec: RopeSpec) -> tuple[str | None, str]:
    """llama.cpp runtime flags or the `workbench export gguf` command, and whether execution verified it."""
    if spec.n_hat > 0:
        return None, "llama.cpp has no start-token window (n_hat)"
    return spec.llama_cpp_flags()


# ---- the doctor -----------------------------------------------------------------------------------------
def _numbers(c: Checkup) -> dict[str, Any]:
    g, lay = c.geometry, c.layout
    numbers: dict[str, Any] = {
        "rope_type": c.kind, "layout": {"v5": "rope_parameters (v5)", "v4": "rope_scaling (v4)",
                                        "none": "no rope dict (default)"}[lay.layout]
        + (f", per layer type: {RESCALED_TYPE} rescaled, {', '.join(lay.kept_types)} kept" if lay.kept_types else ""),
        "rope_theta": f"{lay.rope_theta:g} (from {lay.theta_source})",
        "head_dim (rotary)": f"{g.head_dim} ({g.head_dim // 2} frequency pairs)" + _partial(c.cfg, g.head_dim),
        "rotary pairing": _pairing(c.cfg),
        "original context L0": g.original_max_position_embeddings, "max_position_embeddings": c.max_pos,
    }
    if c.spec is not None:
        d = pair_diagnostics(c.spec)
        numbers.update({
            "factor s": f"{c.spec.factor:g}", "target length L": c.spec.target_length,
            "attention factor": f"{d.attention_factor:.4f}",
            "critical pair": d.critical_dim,
            "pairs with < 1 turn in L0": int((d.max_angle_trained < 2 * math.pi).sum()),
            "pairs out of distribution at L": int(d.out_of_distribution.sum()),
            "effective factor range": f"{d.effective_factor.min():.3f} .. {d.effective_factor.max():.3f}",
        })
    return numbers


PAIRING_WORDS = {"halves": "halves (dimension i with i + D, Llama's rotate_half)",
                 "interleaved": "interleaved (dimensions 2i and 2i + 1, GPT-J style)"}


def _pairing(cfg: dict[str, Any]) -> str:
    from .patch import config_pairing

    found = config_pairing(cfg)
    return PAIRING_WORDS[found] if found else "not known from the config alone (read from the model when patched)"


def rotary_layout(source: Any) -> str:
    """One line on how a model's heads carry RoPE: rotary width, pairing and per-layer-type split."""
    cfg = load_config_dict(source)
    g = model_geometry(cfg)
    line = (f"rotary layout: {g.head_dim} dimensions ({g.head_dim // 2} pairs){_partial(cfg, g.head_dim)}, paired as "
            f"{_pairing(cfg)}")
    per_type = layer_type_summary(cfg)
    return line + (f"; {per_type}" if per_type else "")


def _partial(cfg: dict[str, Any], rotary: int) -> str:
    """", of 64 per head (partial_rotary_factor 0.25)" when only part of each head is rotated."""
    head = cfg.get("head_dim") or (cfg.get("hidden_size", 0) // max(1, cfg.get("num_attention_heads") or 1))
    return f", of {head} per head (partial rotary: {rotary / head:g})" if head and head != rotary else ""


def _early(summary: str, findings: list[Finding], cfg: dict[str, Any], why: str) -> DoctorReport:
    """A report for a config the checks cannot go on with (wrong types, unknown rope_type)."""
    stock, found = stock_verdict(cfg, None)
    return DoctorReport(summary, {}, tuple(findings + found), None, why, None, why, stock)


def doctor(source: Any) -> DoctorReport:
    """Explain a model config's RoPE setting and flag what is inconsistent.

    Raises:
        ConfigError: the config cannot be read or is not a RoPE model.
    """
    cfg = load_config_dict(source)
    errors = config_value_errors(cfg)
    if errors:
        return _early("RoPE settings with values of the wrong type (see findings)",
                      [Finding("error", e) for e in errors], cfg, "invalid config")
    try:
        lay = read_layout(cfg)
    except LayerTypeRopeError as e:
        return _early("RoPE per layer type the workbench cannot split (not supported)", [Finding("error", str(e))],
                      cfg, "RoPE per layer type")
    findings = [f for check in LAYOUT_CHECKS for f in check(cfg, lay)]
    kind, method = lay.params["rope_type"], method_for_rope_type(lay.params["rope_type"])
    if method is None:
        supported = hf_rope_types()
        return _early(f"RoPE type {kind!r} (unknown; supported: {', '.join(supported)})",
                      [*findings, Finding("error", f"rope_type={kind!r} is not one of {supported}")], cfg,
                      "unknown rope_type")
    spec = None
    try:
        spec = spec_from_hf(cfg)
    except SpecError as e:
        findings.append(Finding("error", str(e)))
    c = Checkup(cfg, lay, model_geometry(cfg), method, spec)
    findings += [f for check in SPEC_CHECKS for f in check(c)]
    words = method.words or kind
    if spec is None:
        summary = f"{words} (invalid: see findings)"
    else:
        summary = (f"{words}: head_dim {c.geometry.head_dim}, base {lay.rope_theta:g}, "
                   f"L0 {c.geometry.original_max_position_embeddings} -> {spec.target_length} tokens "
                   f"(s = {spec.factor:g})")
    stock, found = stock_verdict(cfg, spec)
    vllm, vllm_reason = vllm_flags(spec) if spec is not None else (None, "invalid config")
    cpp, cpp_reason = llama_cpp_flags(spec) if spec is not None else (None, "invalid config")
    return DoctorReport(summary, _numbers(c), tuple(findings + found), vllm, vllm_reason, cpp, cpp_reason, stock)


__all__ = ["Checkup", "DoctorReport", "Finding", "LAYOUT_CHECKS", "SPEC_CHECKS", "doctor", "llama_cpp_flags",
           "rotary_layout", "stock_transformers_check", "stock_verdict", "vllm_flags"]
