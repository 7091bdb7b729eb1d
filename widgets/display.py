"""Showing results in a notebook: live plotly widgets when someone is watching, static PNGs under papermill."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from workbench.events import ConsoleSink

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


class PrintProgress(ConsoleSink):
    """Progress lines for a notebook's log: :class:`workbench.events.ConsoleSink`, under the name notebooks use.

    Given the number of ``forwards`` a run will make, each perplexity line also says which forward it is and the
    time left, estimated from the forwards (and layers) done so far.
    """
