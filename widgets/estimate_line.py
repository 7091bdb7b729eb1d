"""What a panel's button would start, shown beside it before it is pressed: the peak memory (from the model's
config alone) and the time (when this machine's rates for the model are known: after its first run here, or
any CLI job), refreshed as the controls change; a job that cannot fit is named in red and its button refuses it.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from functools import lru_cache

import ipywidgets as W

from workbench.estimate import Estimate, Shape, available_bytes, cached_rates, check_fits
from workbench.hf import model_geometry
from workbench.models import load_model_config

# what a panel plans: (model name, engine, dtype, [(length, forwards)]) or None when its controls are incomplete;
# a training plan adds its rows per micro-batch: (model name, engine, dtype, [(length, steps)], batch)
Plan = Callable[[], "tuple[str, str, str, list[tuple[int, int]]] | tuple[str, str, str, list[tuple[int, int]], int] | None"]


@lru_cache(maxsize=16)
def _config(name: str) -> tuple[Shape, int]:
    cfg = load_model_config(name)
    return Shape.from_config(cfg), model_geometry(cfg).original_max_position_embeddings


def original_length(name: str) -> int | None:
    """L0 of a model from its config (None when the config cannot be read)."""
    try:
        return _config(name)[1]
    except (ValueError, OSError):
        return None


class EstimateLine:
    """An HTML line beside a button: ``job: ~1.4 GB peak, ~80 s per 32k forward on this CPU, ~12 min in all``."""

    def __init__(self, job: str, plan: Plan, watch: list[W.Widget]) -> None:
        self.job, self.plan = job, plan
        self.widget = W.HTML(layout=W.Layout(margin="0 0 0 12px"))
        for w in watch:
            w.observe(lambda _: self.refresh(), names="value")
        self.refresh()

    def estimate(self) -> Estimate | None:
        try:
            planned = self.plan()
            if planned is None:
                return None
            name, engine, dtype, forwards, *batch = planned
            shape = _config(name)[0]
        except (ValueError, OSError):
            return None  # a model the panel will report on when it loads it
        forwards = [(L, n) for L, n in forwards if n > 0]
        if not forwards:
            return None
        est = Estimate(self.job, shape, dtype, engine, tuple(forwards), batch[0] if batch else 1)
        return est.with_rates(cached_rates(shape, dtype))

    def refresh(self) -> None:
        est = self.estimate()
        if est is None:
            self.widget.value = ""
            return
        refusal = self.refusal(est)
        text = est.line().split(": ", 1)[1]
        if est.rates is None:
            text += " (time: measured here at the first run)"
        color = "#b2182b" if refusal else "#555"
        self.widget.value = f"<span style='color:{color}'>{html.escape(refusal or text)}</span>"

    def refusal(self, est: Estimate | None = None) -> str | None:
        """Why the job cannot start here (its peak exceeds the memory available), or None."""
        est = est or self.estimate()
        if est is None:
            return None
        try:
            check_fits(est, available=available_bytes(), remedy="choose shorter lengths or fewer at once",
                       force_hint="")  # a panel has no --force
        except ValueError as e:
            return str(e)
        return None


__all__ = ["EstimateLine", "original_length"]
