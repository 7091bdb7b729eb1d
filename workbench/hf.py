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
from dataclasses import dataclass, field
from typing import Any

from .configs import (
    KEPT_TYPES as KEPT_TYPES,
)
from .configs import (
    RESCALED_TYPE as RESCALED_TYPE,
)
from .configs import (  # re-exported: the transformers boundary reads configs too
    ConfigError as ConfigError,
)
from .configs import (
    Geometry as Geometry,
)
from .configs import (
    LayerTypeRopeError as LayerTypeRopeError,
)
from .configs import (
    RopeLayout as RopeLayout,
)
from .configs import (
    config_value_errors as config_value_errors,
)
from .configs import (
    is_rope_config as is_rope_config,
)
from .configs import (
    layer_type_rope as layer_type_rope,
)
from .configs import (
    layer_type_summary as layer_type_summary,
)
from .configs import (
    load_config_dict as load_config_dict,
)
from .configs import (
    model_geometry as model_geometry,
)
from .configs import (
    read_layout as read_layout,
)
from .configs import (
    unknown_rope_keys as unknown_rope_keys,
)
from .rope import (
    NotExpressibleError,
    RopeSpec,
    SpecError,
    available_methods,
    get_method,
    hf_rope_types,
    make_spec,
    method_for_rope_type,
    method_specs,
)


def spec_for_model(source: Any, method: str, *, target_length: int | None = None,
                   factor: float | None = None, **params: Any) -> RopeSpec:
    """A new spec of ``method`` with the geometry of a model (or config)."""
    g = model_geometry(source)
    return make_spec(method, head_dim=g.head_dim, rope_theta=g.rope_theta,
                     original_max_position_embeddings=g.original_max_position_embeddings,
                     target_length=target_length, factor=factor, **params)


def example_spec_for_model(source: Any, method: str, *, target_length: int | None = None,
                           factor: float | None = None) -> RopeSpec:
    """A representative spec of ``method`` (the parameters its file declares in ``example_params``) with the
    geometry of a model (or config)."""
    like = spec_for_model(source, "linear", target_length=target_length, factor=factor)
    return method_specs(like, [method])[method]


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
    for method in [m for m in available_methods() if get_method(m).spec_cls.hf_rope_types]:  # a rope_type each
        try:
            spec = example_spec_for_model(base, method, factor=2.0)
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
