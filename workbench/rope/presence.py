"""How a method presents itself: the controls the frequency explorer builds for it and the look of its curves.

A method declares both on its spec class (``explorer_controls``, ``look``), beside its label, its place in the
teaching order and its roles; the widgets, the search and the reports read them from the registry, so a new
method appears everywhere from its own file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("float", "int", "choice", "pair", "curve")

# What a role puts a method in (``RopeSpec.roles``):
ROLES = {
    "compare": "drawn beside the others in the explorer's factor plot",
    "evaluate": "offered (and chosen at first) by the evaluation dashboard and the entropy explorer",
    "seed": "its frequency factors seed the factor search, and the held-out report compares the searched factors "
            "with it",
}


@dataclass(frozen=True)
class Control:
    """One explorer control: the spec parameter ``name`` it sets.

    ``kind``: "float" or "int" (a slider from ``low`` to ``high`` by ``step``), "choice" (buttons over
    ``options``), "pair" (a pair index up to the number of pairs minus one, set to the critical dimension when
    the geometry changes), "curve" (the per-pair factor curve drawn with the knot sliders). ``shown_when``
    (another control's name, a value): shown only while that control has that value.
    """

    name: str
    label: str = ""
    default: Any = None
    low: float = 0.0
    high: float = 1.0
    step: float = 1.0
    kind: str = "float"
    options: tuple[str, ...] = ()
    shown_when: tuple[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Control kind={self.kind!r} is not allowed: one of {KINDS}")
        if self.kind == "choice" and self.default not in self.options:
            raise ValueError(f"Control {self.name!r}: default {self.default!r} is not one of {self.options}")
        if self.kind in ("float", "int") and not self.low <= self.default <= self.high:
            raise ValueError(f"Control {self.name!r}: default {self.default!r} is outside [{self.low}, {self.high}]")


@dataclass(frozen=True)
class Look:
    """How a method's curves are drawn: colour, dash pattern, width and marker (None: a plain line), so methods
    whose curves coincide (PI under the s line, YaRN along LongRoPE) stay told apart."""

    color: str = "#444444"
    dash: str = "solid"
    width: float = 2.0
    marker: str | None = None
