"""Reading a model config: its RoPE layout (v5 ``rope_parameters``, v4 ``rope_scaling``, per layer type), its
geometry (head_dim, rope_theta, L0), and the value checks made before anything is built from it. Writing a
method back is :mod:`workbench.hf`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rope import method_for_rope_type


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
