"""Showing results in a notebook: live plotly widgets when someone is watching, static PNGs under papermill."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from workbench.events import Event

from .static import save_png


def show(figs: go.Figure | Sequence[go.Figure], name: str, output_dir: str | Path, live: bool, columns: int = 2) -> Path:
    """Save the figure(s) as ``output_dir/name.png``; display them live (FigureWidget) or as the PNG."""
    from IPython.display import Image, display

    figs = [figs] if isinstance(figs, go.Figure) else list(figs)
    path = save_png(figs, Path(output_dir) / f"{name}.png", columns=columns)
    if live:
        for f in figs:
            display(go.FigureWidget(f))
    else:
        display(Image(filename=str(path)))
    return path


def save_results(output_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results.json`` (what the notebook tests and the demo read)."""
    path = Path(output_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)))
    return path


class PrintProgress:
    """An event sink that prints progress lines (readable in papermill's log): a few per forward, one per document.

    Given the number of ``forwards`` a run will make, each line also says which forward it is and the time
    left, estimated from the forwards (and layers) done so far.
    """

    def __init__(self, stream: Any = None, every: float = 0.25, forwards: int | None = None) -> None:
        self.stream = stream or sys.stdout
        self.t0 = time.time()
        self.every = every  # print layer progress at these fractions of a forward
        self.forwards = forwards
        self.done = 0  # forwards completed

    def _eta(self, fraction_of_current: float) -> str:
        if not self.forwards:
            return ""
        progress = (self.done + fraction_of_current) / self.forwards
        here = f"; forward {min(self.done + 1, self.forwards)}/{self.forwards}"
        if progress <= 0 or progress >= 1:
            return here if progress < 1 else f"; forward {self.forwards}/{self.forwards}, done"
        left = (time.time() - self.t0) * (1 - progress) / progress
        return f"{here}, about {_duration(left)} left"

    def __call__(self, event: Event) -> None:
        d = event.data
        if event.kind == "ppl.layer" and d["layers"]:
            step = max(1, round(d["layers"] * self.every))
            if d["layer"] % step == 0 and d["layer"] < d["layers"]:
                print(f"[{time.time() - self.t0:6.0f}s] {d['label']:>12} @ {d['length']:>6} tokens: document "
                      f"{d['index'] + 1}/{d['of']}, layer {d['layer']}/{d['layers']}"
                      f"{self._eta(d['layer'] / d['layers'])}", file=self.stream, flush=True)
        if event.kind == "ppl.document":
            self.done += 1
            print(f"[{time.time() - self.t0:6.0f}s] {d['label']:>12} @ {d['length']:>6} tokens: document "
                  f"{d['index'] + 1}/{d['of']} PPL {d['ppl']:.2f} ({d['document']}){self._eta(0.0)}",
                  file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
