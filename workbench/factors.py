"""Factor sets: a searched RoPE spec kept as a file, with where it came from.

The package ships the results of searches run in this repository (``workbench/assets/factors/*.json``),
so a notebook or the demo can show searched factors without searching first. A factor set file holds
``{"name", "model", "description", "spec": <RopeSpec.to_dict()>, "provenance": {...}}``; any JSON file in
that format loads too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rope import RopeSpec, SpecError, spec_from_dict

SHIPPED = Path(__file__).resolve().parent / "assets" / "factors"


class FactorSetError(ValueError):
    """A factor set could not be found or read; the message says which ones exist."""


@dataclass(frozen=True)
class FactorSet:
    """A RoPE spec (usually searched LongRoPE factors) with its description and provenance."""

    name: str
    model: str
    description: str
    spec: RopeSpec
    provenance: dict[str, Any] = field(default_factory=dict)

    def fitted_to(self, geometry: Any) -> FactorSet:
        """This set, after checking that it was made for a model of this RoPE geometry.

        Args:
            geometry: the model's head_dim, rope_theta and original_max_position_embeddings: a
                :class:`workbench.hf.Geometry` (``model_geometry(model)``) or any spec of that model.

        Raises:
            FactorSetError: head_dim, rope_theta or original_max_position_embeddings differ (names which).
        """
        for name in ("head_dim", "rope_theta", "original_max_position_embeddings"):
            mine, theirs = getattr(self.spec, name), getattr(geometry, name)
            if mine != theirs:
                raise FactorSetError(f"factor set {self.name!r} was made for {name}={mine:g}, this model has "
                                     f"{theirs:g}: it fits {self.model or 'another model'}, not this one")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "description": self.description,
                "spec": self.spec.to_dict(), "provenance": self.provenance}


def shipped_factor_sets() -> list[str]:
    """Names of the factor sets shipped with the package."""
    return sorted(p.stem for p in SHIPPED.glob("*.json"))


def load_factor_set(name_or_path: str | Path) -> FactorSet:
    """A shipped factor set by name (see :func:`shipped_factor_sets`) or a factor-set JSON file.

    Raises:
        FactorSetError: unknown name, missing or unreadable file, or a spec that does not validate.
    """
    text = str(name_or_path)
    path = SHIPPED / f"{text}.json" if text in shipped_factor_sets() else Path(text)
    if not path.is_file():
        raise FactorSetError(f"factor set {text!r} is neither a shipped one ({', '.join(shipped_factor_sets())}) "
                             "nor an existing JSON file")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FactorSetError(f"factor set file {str(path)!r} is not readable JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
        raise FactorSetError(f"{str(path)!r} is not a factor set: it needs a 'spec' object (a RopeSpec dict)")
    try:
        spec = spec_from_dict(data["spec"])
    except (SpecError, TypeError) as e:
        raise FactorSetError(f"{str(path)!r}: its spec is not valid: {e}") from None
    return FactorSet(name=str(data.get("name", path.stem)), model=str(data.get("model", "")),
                     description=str(data.get("description", "")), spec=spec,
                     provenance=dict(data.get("provenance") or {}))
