"""Showing figures in a notebook: one mime bundle per figure, the same live, headless and in a saved file.

A figure is displayed as plain data, never as a widget: ``application/vnd.plotly.v1+json`` (JupyterLab's plotly
extension draws it, interactive on hover), ``image/png`` (rendered here with matplotlib: what nbconvert's HTML,
GitHub and a notebook opened without the extension show) and a one-line ``text/plain``. No plotly.js is
embedded (it would cost ~4 MB per notebook) and no widget state is stored, so an executed notebook stays small
and keeps its figures when saved and reopened.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from workbench.events import ConsoleSink
from workbench.static import png_bytes, stitch, wrap_title

PLOTLY_MIME = "application/vnd.plotly.v1+json"
MAX_POINTS = 400  # a line trace longer than this is thinned (min and max per bucket keep its envelope)
# the few parts of plotly's "plotly_white" template the figures use (the whole template is ~7 kB per figure)
TEMPLATE = {"layout": {
    "colorway": ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880"],
    "font": {"color": "#2a3f5f"}, "paper_bgcolor": "white", "plot_bgcolor": "white", "hovermode": "closest",
    "hoverlabel": {"align": "left"}, "title": {"x": 0.05},
    **{axis: {"gridcolor": "#EBF0F8", "linecolor": "#EBF0F8", "ticks": "", "title": {"standoff": 15},
              "zerolinecolor": "#EBF0F8", "automargin": True, "zerolinewidth": 2} for axis in ("xaxis", "yaxis")}}}


def show(figs: go.Figure | Sequence[go.Figure], name: str | None = None, output_dir: str | Path | None = None,
         live: bool | None = None, columns: int = 2) -> None:
    """Display each figure as one mime bundle (plotly JSON + PNG + text); with ``output_dir`` and ``name`` also
    save them side by side, ``columns`` to a row, as ``output_dir/name.png``.

    ``live`` is accepted for older calls and changes nothing: live and headless runs show the same bundles.
    Returns None, so a figure cell echoes nothing after its figures.
    """
    from IPython.display import display

    figs = [figs] if isinstance(figs, go.Figure) else list(figs)
    tiles = []
    for fig in figs:
        data = mime_bundle(fig)
        display(data, raw=True)
        tiles.append(data["image/png"])
    if output_dir is not None and name and tiles:
        import base64

        stitch([base64.b64decode(t) for t in tiles], Path(output_dir) / f"{name}.png", columns=columns)


def markdown(text: str) -> None:
    """Display Markdown (a table, say) rendered, not as raw pipes."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def mime_bundle(fig: go.Figure, png: bool = True) -> dict[str, Any]:
    """The figure as a display bundle: plotly JSON, a PNG (``png``) and a one-line text."""
    import base64

    out: dict[str, Any] = {PLOTLY_MIME: figure_json(fig)}
    if png:
        out["image/png"] = base64.b64encode(png_bytes(fig)).decode("ascii")
    out["text/plain"] = f"<figure: {fig.layout.title.text or 'untitled'}>"
    return out


def figure_json(fig: go.Figure, max_points: int = MAX_POINTS) -> dict[str, Any]:
    """Plain JSON for plotly.js: lists (not base64 arrays), 5 significant digits, no NaN, long lines thinned,
    and a compact template instead of the named one."""
    spec = _decode(fig.to_plotly_json())
    layout = {k: v for k, v in spec.get("layout", {}).items() if k != "template"}
    layout["template"] = TEMPLATE
    _wrap_title(layout)
    data = [_thin(trace, max_points) for trace in spec.get("data", [])]
    return {"data": _plain(data), "layout": _plain(layout), "config": {"displaylogo": False, "responsive": True}}


def _wrap_title(layout: dict[str, Any]) -> None:
    """Break a title too long for the figure's width into lines (plotly clips it), with room made above."""
    title = layout.get("title")
    text = title.get("text") if isinstance(title, dict) else None
    if not text:
        return
    width = int((layout.get("width") or 900) / 9)  # ~9 px per character of plotly's 17 px title font
    lines = wrap_title(text, width).split("\n")
    if len(lines) > 1:
        layout["title"] = {**title, "text": "<br>".join(lines)}
        margin = layout.get("margin") or {}
        layout["margin"] = {**margin, "t": max(margin.get("t") or 0, 30 + 22 * len(lines))}


def _thin(trace: dict[str, Any], max_points: int) -> dict[str, Any]:
    """A line trace with more than ``max_points`` points keeps, per bucket, its first, lowest and highest point."""
    y = trace.get("y")
    if trace.get("type", "scatter") != "scatter" or y is None or len(y) <= max_points or \
            "markers" in (trace.get("mode") or "lines"):
        return trace
    try:
        y = np.asarray(y, dtype=float)
        x = np.arange(len(y)) if trace.get("x") is None else np.asarray(trace["x"], dtype=float)
    except (TypeError, ValueError):  # categories: nothing to thin
        return trace
    keep = {0, len(y) - 1}
    for part in np.array_split(np.arange(len(y)), max(1, max_points // 3)):
        seg = y[part]
        if np.isfinite(seg).any():
            keep |= {int(part[0]), int(part[np.nanargmin(seg)]), int(part[np.nanargmax(seg)])}
    idx = sorted(keep)
    return {**trace, "x": x[idx], "y": y[idx]}


def _decode(value: Any) -> Any:
    """plotly's base64 typed arrays ({"dtype", "bdata", "shape"}) back to numpy arrays, everywhere in a spec."""
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            import base64

            arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
            shape = value.get("shape")
            if shape:
                arr = arr.reshape([int(n) for n in str(shape).split(",")])
            return arr
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decode(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (float, np.floating)):
        return float(f"{value:.5g}") if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


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
