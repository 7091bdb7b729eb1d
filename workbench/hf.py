"""The transformers boundary: read RoPE settings from a config and write them back.

transformers 5 keeps RoPE settings in ``config.rope_parameters`` (``rope_type``, ``rope_theta``,
...); transformers 4 used ``config.rope_scaling`` plus a top-level ``rope_theta``. We read both
layouts and write either. What each rope_type means is its method's own knowledge
(``RopeSpec.from_hf`` / ``RopeSpec.hf_form``, found through the registry); this module adds the layout.
The doctor that explains a config is :mod:`workbench.doctor`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rope import (
    NotExpressibleError,
    RopeSpec,
    SpecError,
    hf_rope_types,
    make_spec,
    method_for_rope_type,
)


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
    kept_types: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-layer-type RoPE: the windowed types
    # that keep their settings (params is then the full-attention layers' dict)


_INT_KEYS = ("hidden_size", "num_attention_heads", "head_dim", "max_position_embeddings",
             "original_max_position_embeddings")
_ROPE_KEYS_COMMON = {"rope_type", "type", "rope_theta", "partial_rotary_factor"}


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
    per_type = layer_type_rope(cfg)
    if per_type is not None:  # the rescaled layers' dict is the one a method reads
        rope, where = per_type.get(RESCALED_TYPE, {}), f"rope_parameters.{RESCALED_TYPE}."
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
    per_type = layer_type_rope(cfg)
    for where in ("rope_parameters", "rope_scaling"):
        rope = cfg.get(where)
        if per_type is not None and where == "rope_parameters":
            rope, where = per_type.get(RESCALED_TYPE, {}), f"rope_parameters.{RESCALED_TYPE}"
        if isinstance(rope, dict):
            cls = method_for_rope_type(rope.get("rope_type", rope.get("type", "default")))
            if cls is None:
                return where, [], []
            allowed = _ROPE_KEYS_COMMON | cls.hf_keys
            return where, sorted(set(rope) - allowed), sorted(allowed)
    return "", [], []


def layer_type_rope(cfg: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The RoPE settings per layer type (Gemma 3: ``{"sliding_attention": {...}, "full_attention": {...}}``), or
    None for one setting for every layer."""
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and rope and all(isinstance(v, dict) for v in rope.values()):
        return rope
    return None


# Per-layer-type RoPE (Gemma 3, OLMo 3, ...): the layers that attend to the whole context carry the long-context
# RoPE; sliding-window layers only ever see distances inside their window, so they keep theirs (as Gemma 3's own
# long-context checkpoints do).
RESCALED_TYPE = "full_attention"
KEPT_TYPES = ("sliding_attention",)


class LayerTypeRopeError(ConfigError):
    """The config gives its layer types RoPE settings the workbench cannot split into rescaled and kept."""


def _layer_type_error(cfg: dict[str, Any], per_type: dict[str, dict[str, Any]]) -> LayerTypeRopeError:
    kinds = "; ".join(f"{name}: {p.get('rope_type', 'default')}, rope_theta {p.get('rope_theta', '?')}"
                      for name, p in per_type.items())
    return LayerTypeRopeError(
        f"model_type={cfg.get('model_type')!r} gives each layer type its own RoPE ({kinds}); the workbench rescales "
        f"the {RESCALED_TYPE} layers and keeps windowed ones ({', '.join(KEPT_TYPES)}), so it neither patches nor "
        "exports these layer types")


def read_layout(cfg: dict[str, Any]) -> RopeLayout:
    """Find the RoPE dict and theta in either layout. With RoPE per layer type, the dict is the full-attention
    layers' and the windowed layer types are ``kept_types``.

    Raises:
        ConfigError: a RoPE value of the wrong type (the message names the key); LayerTypeRopeError: RoPE
            settings per layer type other than full attention plus windowed types.
    """
    per_type = layer_type_rope(cfg)
    kept: dict[str, dict[str, Any]] = {}
    if per_type is not None:
        if RESCALED_TYPE not in per_type or set(per_type) - {RESCALED_TYPE, *KEPT_TYPES}:
            raise _layer_type_error(cfg, per_type)
        kept = {k: dict(v) for k, v in per_type.items() if k != RESCALED_TYPE}
    errors = config_value_errors(cfg)
    if errors:
        raise ConfigError("; ".join(errors))
    if per_type is not None:
        params, layout = dict(per_type[RESCALED_TYPE]), "v5"
    elif isinstance(cfg.get("rope_parameters"), dict):
        params, layout = dict(cfg["rope_parameters"]), "v5"
    elif isinstance(cfg.get("rope_scaling"), dict):
        params, layout = dict(cfg["rope_scaling"]), "v4"
    else:
        params, layout = {}, "none"
    params["rope_type"] = params.get("rope_type", params.get("type", "default"))
    where = f"rope_parameters.{RESCALED_TYPE}" if per_type is not None else (
        "rope_parameters" if layout == "v5" else "rope_scaling")
    if "rope_theta" in params and params["rope_theta"] is not None:
        theta, source = float(params["rope_theta"]), f"{where}.rope_theta"
    elif cfg.get("rope_theta") is not None:
        theta, source = float(cfg["rope_theta"]), "rope_theta"
    else:
        theta, source = 10000.0, "transformers' default (10000; not in the config)"
    return RopeLayout(params, layout, theta, source, kept)


def layer_type_summary(cfg: dict[str, Any]) -> str | None:
    """One line on a per-layer-type config: which layers the workbench rescales and which keep their RoPE; None
    for one RoPE in every layer."""
    lay = read_layout(cfg)
    if not lay.kept_types:
        return None
    window = cfg.get("sliding_window")
    kept = "; ".join(f"{name} kept ({p.get('rope_type', 'default')}, θ {p.get('rope_theta', '?'):g}"
                     + (f", window {window} tokens)" if window else ")") for name, p in lay.kept_types.items())
    return f"RoPE per layer type: {RESCALED_TYPE} rescaled (θ {lay.rope_theta:g}); {kept}"


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
    cls = method_for_rope_type(lay.params["rope_type"])
    if (cls is not None and cls.hf_original_from_max_position) or not L0:  # dynamic NTK in transformers
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
    cls = method_for_rope_type(kind)
    if cls is None:
        raise SpecError(f"rope_type={kind!r} is not allowed: supported: {', '.join(hf_rope_types())}")
    max_pos = cfg.get("max_position_embeddings") or g.original_max_position_embeddings
    factor = p.get("factor")
    if factor is None:
        factor = max_pos / g.original_max_position_embeddings
    geometry = dict(head_dim=g.head_dim, rope_theta=g.rope_theta,
                    original_max_position_embeddings=g.original_max_position_embeddings)
    return cls.from_hf(p, geometry=geometry, factor=factor)


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
        """A copy of ``config`` with this export merged in (stale keys of the other layout removed). Keys of the
        source's RoPE dict that no method owns (``partial_rotary_factor``, ...) are kept."""
        out = {k: v for k, v in config.items() if k not in ("rope_scaling", "rope_parameters")}
        if self.layout == "v5":
            out.pop("rope_theta", None)
        if "original_max_position_embeddings" in config:  # Phi-3 keeps L0 at the top level too
            out["original_max_position_embeddings"] = self.rope_parameters.get(
                "original_max_position_embeddings", config["original_max_position_embeddings"]
            )
        out.update(self.config_updates)
        kept = _unowned_rope_keys(config)
        where = "rope_parameters" if self.layout == "v5" else "rope_scaling"
        if kept and isinstance(out.get(where), dict):
            out[where] = {**kept, **out[where]}
        elif kept and self.layout == "v4":  # rope_scaling null (default RoPE): the kept keys go to the top level
            out.update({k: v for k, v in kept.items() if k not in out})
        per_type = layer_type_rope(config)
        if per_type is not None and self.layout == "v5":  # the same per-layer-type form, full attention rewritten
            out["rope_parameters"] = {**copy.deepcopy(per_type), RESCALED_TYPE: out["rope_parameters"]}
        return out


def _method_keys() -> set[str]:
    """Every key some RoPE method reads from a rope dict."""
    keys = {"rope_type", "type", "rope_theta"}
    for rope_type in hf_rope_types():
        cls = method_for_rope_type(rope_type)
        keys |= set(cls.hf_keys) if cls is not None else set()
    return keys


def _unowned_rope_keys(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of a config's RoPE dict that describe the architecture, not the method (e.g.
    ``partial_rotary_factor``): an export writes its own method keys and keeps these. The trained context
    ``original_max_position_embeddings`` is kept too where the new method does not write it: some architectures'
    attention reads it (Ministral 3's query scaling), and the methods that do not write it do not read it."""
    per_type = layer_type_rope(config)
    for where in ("rope_parameters", "rope_scaling"):
        rope = config.get(where)
        if per_type is not None:
            rope = per_type.get(RESCALED_TYPE)
        if isinstance(rope, dict):
            owned = _method_keys() - {"original_max_position_embeddings"}
            return {k: v for k, v in rope.items() if k not in owned}
    return {}


def to_hf(spec: RopeSpec, layout: str = "v5", *, allow_lossy: bool = False) -> HFExport:
    """Write ``spec`` as transformers ``rope_parameters`` (v5) or ``rope_scaling`` (v4).

    Raises:
        NotExpressibleError: n_hat > 0 or dynamic YaRN, which stock transformers cannot compute;
            with ``allow_lossy=True`` they are dropped and a note says so.
    """
    if layout not in ("v5", "v4"):
        raise SpecError(f"layout={layout!r} is not allowed: 'v5' (rope_parameters) or 'v4' (rope_scaling)")
    notes = n_hat_notes(spec, allow_lossy)
    form = spec.hf_form(allow_lossy)  # the method's own rope parameters
    notes += form.notes
    params = form.params
    if layout == "v5":
        params = {**params, "rope_theta": form.rope_theta}
        updates: dict[str, Any] = {"rope_parameters": params, "max_position_embeddings": form.max_position_embeddings}
    else:
        scaling = None if params["rope_type"] == "default" else {**params, "type": params["rope_type"]}
        updates = {"rope_scaling": scaling, "rope_theta": form.rope_theta,
                   "max_position_embeddings": form.max_position_embeddings}
        if scaling and form.top_level_original:
            updates["original_max_position_embeddings"] = spec.original_max_position_embeddings  # Phi-3 style
    return HFExport(params, updates, layout, tuple(notes))


def n_hat_notes(spec: RopeSpec, allow_lossy: bool) -> list[str]:
    """What an export says about n_hat: stock transformers has one inv_freq for all positions.

    Raises:
        NotExpressibleError: n_hat > 0 without ``allow_lossy``.
    """
    if spec.n_hat == 0:
        return []
    msg = (f"n_hat={spec.n_hat}: stock transformers cannot keep the original rotation for the "
           "first n_hat positions (its rotary embedding has one inv_freq for all positions)")
    if not allow_lossy:
        raise NotExpressibleError(msg + "; export with allow_lossy=True (--allow-lossy) to drop it, or run the model "
                                  "through workbench.patch")
    return [msg + "; dropped from this export"]


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
    notes: tuple[str, ...] = ()
    if layer_type_rope(base) is not None:
        try:
            summary = layer_type_summary(base)
        except LayerTypeRopeError as e:
            raise NotExpressibleError(str(e)) from None
        if layout != "v5":
            raise NotExpressibleError(f"model_type={base.get('model_type')!r} keeps RoPE per layer type, which only "
                                      "rope_parameters (layout v5) can write; export with --layout v5")
        notes = (f"{summary}: the spec is written to rope_parameters.{RESCALED_TYPE}, the other layer types are "
                 "kept",)
    exp = to_hf(spec, layout, allow_lossy=allow_lossy)
    full = exp.apply(base)
    return full, exp.notes + notes + _check_with_config_class(full, spec, base)


def _config_class_reads(full: dict[str, Any]) -> tuple[Any, str | None]:
    """(config object, None) as the model's own config class builds ``full``, or (None, the class's reason)."""
    try:
        return hf_config_from_dict(full), None
    except Exception as e:  # noqa: BLE001 - any refusal by the class is the answer we report
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        return None, f"{type(e).__name__}: {text[:300]}"


def _same_rope(spec: RopeSpec, obj: Any) -> str | None:
    """None when the config object reads back ``spec`` exactly; else what differs."""
    try:
        back = spec_from_hf(obj)
    except (ConfigError, SpecError) as e:
        return f"reading it back fails ({e})"
    if back.method != spec.method and not (spec.method in ("ntk", "longrope2") and back.method in ("default", "longrope")):
        return f"it turns rope_type into {back.method!r}"
    if back.head_dim != spec.head_dim:
        return (f"gives a rotary dimension of {back.head_dim} where the spec has {spec.head_dim} (a spec made for "
                "another head size, or a lost key such as partial_rotary_factor)")
    plain = dataclasses.replace(spec, n_hat=0) if spec.n_hat else spec  # n_hat: dropped with a note, if allowed
    for length in (None, spec.original_max_position_embeddings):
        ours, theirs = plain.frequencies(length), back.frequencies(length)
        if not _close(ours.inv_freq, theirs.inv_freq) or abs(ours.attention_factor - theirs.attention_factor) > 1e-9:
            return "its frequencies or attention factor differ from the spec's"
    return _stock_init_differs(plain, obj)


def _stock_init_differs(spec: RopeSpec, obj: Any) -> str | None:
    """What transformers' own frequency initialisation for the config's rope_type computes, against the spec (the
    model's rotary module calls the same function); None when they agree."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = getattr(obj, "rope_parameters", None) or {}
    per_type = layer_type_rope({"rope_parameters": rope})
    layer_type = RESCALED_TYPE if per_type is not None else None
    rope = per_type.get(RESCALED_TYPE, {}) if per_type is not None else rope
    init = ROPE_INIT_FUNCTIONS.get(rope.get("rope_type", "default"))
    if init is None:
        return None
    for length in (spec.original_max_position_embeddings, spec.target_length):
        try:
            inv_freq, attention = init(obj, None, length, layer_type=layer_type)
        except Exception as e:  # noqa: BLE001 - any failure there is a model that cannot be built from the export
            head = " (the config has head_dim null: give it a number)" if getattr(obj, "head_dim", 0) is None else ""
            return f"transformers' own {rope.get('rope_type')} initialisation fails on it ({type(e).__name__}: {e}){head}"
        ours = spec.frequencies(length)
        if not _close(ours.inv_freq, inv_freq) or abs(ours.attention_factor - float(attention)) > 1e-6:
            return f"transformers computes other frequencies from it at {length} tokens than the spec does"
    return None


def _close(a: Any, b: Any) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), rtol=1e-6, atol=0))


def _check_with_config_class(full: dict[str, Any], spec: RopeSpec, base: dict[str, Any]) -> tuple[str, ...]:
    """Build the exported config with the model's own config class and read it back; refuse what the class
    rewrites, refuses or loses (naming the rope types it does keep). A model_type transformers does not know
    cannot be checked: a note says so."""
    from transformers import CONFIG_MAPPING

    model_type = full.get("model_type")
    if not model_type:
        return ()
    if model_type not in CONFIG_MAPPING:
        return (f"model_type={model_type!r} is not known to this transformers: the export was not checked against "
                "its config class",)
    obj, refusal = _config_class_reads(full)
    problem = refusal and f"refuses it ({refusal})"
    if obj is not None:
        problem = _same_rope(spec, obj)
    if problem is None:
        return ()
    cls = type(obj).__name__ if obj is not None else f"{model_type}'s config class"
    if problem.startswith("gives a rotary dimension"):  # the geometry, not the method: no other method helps
        raise NotExpressibleError(f"{cls} {problem}: make the spec from this model's config "
                                  "(workbench.hf.spec_for_model) or keep its partial rotary setting")
    kept = [m for m in _kept_methods(base) if m != spec.method]
    hint = (f"; it keeps {', '.join(kept)}: use --method {kept[-1]}" if kept else
            "; it keeps none of the workbench's methods")
    raise NotExpressibleError(f"{cls} {problem}: stock transformers would not compute this {spec.method} RoPE"
                              f"{hint}")


def _kept_methods(base: dict[str, Any]) -> list[str]:
    """The methods (at factor 2) that ``base``'s config class keeps as exported."""
    out = []
    extra = {"llama3": {"low_freq_factor": 1.0, "high_freq_factor": 4.0}}
    for method in ("default", "linear", "dynamic", "yarn", "llama3", "longrope"):
        try:
            if method == "longrope":
                extra[method] = {"long_factor": [2.0] * (model_geometry(base).head_dim // 2)}
            spec = spec_for_model(base, method, factor=2.0, **extra.get(method, {}))
            full = to_hf(spec).apply(base)
        except (ConfigError, SpecError):
            continue
        obj, _ = _config_class_reads(full)
        if obj is not None and _same_rope(spec, obj) is None:
            out.append(method)
    return out


def hf_config_from_dict(cfg: dict[str, Any]):
    """A transformers config object for a config dict (its model_type picks the class); ``cfg`` is left as it
    was (config classes rewrite nested dicts such as ``rope_parameters`` in place)."""
    from transformers import AutoConfig

    data = copy.deepcopy(dict(cfg))
    model_type = data.pop("model_type", None)
    if model_type is None:
        raise ConfigError("config has no model_type")
    for k in ("transformers_version", "architectures_auto"):
        data.pop(k, None)
    return AutoConfig.for_model(model_type, **data)


__all__ = [
    "ConfigError", "Geometry", "HFExport", "NotExpressibleError", "RopeLayout", "config_value_errors",
    "export_config", "hf_config_from_dict", "is_rope_config", "layer_type_summary", "load_config_dict", "model_geometry",
    "read_layout",
    "spec_for_model", "spec_from_hf", "to_hf", "unknown_rope_keys",
]
