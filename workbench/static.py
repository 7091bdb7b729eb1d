"""Render the workbench's plotly figures as static PNGs with matplotlib (no browser, no kaleido): the PNG of a
figure is drawn from the same figure object the notebook shows, never from a second drawing of it.

Covers what the workbench draws: scatter lines/markers, heatmaps, bars, log axes, line and rectangle shapes, text
annotations and titles. A trace of another type is refused (:class:`StaticRenderError`), never left out silently.
matplotlib is used through its object API (``Figure`` + the Agg canvas) and imported inside the functions, as
plotly is: importing this module costs nothing and selects no backend for the caller's process.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_DASH = {None: "-", "solid": "-", "dash": "--", "dot": ":", "dashdot": "-.", "longdash": (0, (8, 3)),
         "longdashdot": (0, (8, 3, 2, 3))}
_MARKERS = {"circle": "o", "square": "s", "diamond": "D", "triangle-up": "^", "x": "x"}


def _rgba(color: str | None):
    if color and color.startswith("rgba("):
        r, g, b, a = (float(x) for x in color[5:-1].split(","))
        return (r / 255, g / 255, b / 255, a)
    return color


def _short_number(v: float) -> str:
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _axis_values(values, n: int) -> tuple[np.ndarray, list[str] | None]:
    """Numeric positions for a heatmap axis, and labels when the axis is categorical."""
    if values is None:
        return np.arange(n), None
    try:
        return np.asarray(values, dtype=float), None
    except (TypeError, ValueError):
        return np.arange(len(values)), [str(v) for v in values]


class StaticRenderError(ValueError):
    """A figure holds something the static renderer cannot draw (it would vanish from the PNG)."""


def _draw(ax: Any, fig: Any) -> None:
    lay = fig.layout
    drawers = {"scatter": _draw_scatter, "heatmap": _draw_heatmap, "bar": _draw_bar}
    for tr in fig.data:
        if tr.type not in drawers:
            raise StaticRenderError(f"a {tr.type!r} trace ({tr.name or 'unnamed'}) in {lay.title.text!r} cannot be "
                                    f"drawn as a static PNG: the renderer draws {sorted(drawers)} traces")
        drawers[tr.type](ax, tr)
    for sh in lay.shapes or ():
        _draw_shape(ax, sh)
    for an in lay.annotations or ():
        _draw_annotation(ax, an, lay)
    _style_axes(ax, lay)
    # labels placed on the plot's top edge (L0, ...) would sit on the title: lift it above them
    top = any(an.yref == "paper" and (an.y or 0) >= 1 and an.yanchor == "bottom" for an in lay.annotations or ())
    ax.set_title(wrap_title(lay.title.text or ""), fontsize=10, pad=16 if top else 6)
    ax.set_xlabel(lay.xaxis.title.text or "")
    ax.set_ylabel(lay.yaxis.title.text or "")
    ax.grid(alpha=0.25)
    if lay.yaxis.scaleanchor == "x" or lay.xaxis.scaleanchor == "y":
        ax.set_aspect("equal", adjustable="datalim")  # circles stay circles, as in the live plotly view
    if lay.showlegend is not False and any(tr.type in ("scatter", "bar") and tr.name for tr in fig.data):
        ax.legend(fontsize=7, loc="best")


def _draw_scatter(ax: Any, tr) -> None:
    mode = tr.mode or "lines"
    line = tr.line or {}
    style = _DASH.get(line.dash, "-") if "lines" in mode else "none"
    marker = "o" if "markers" in mode else None
    if marker and tr.marker is not None and tr.marker.symbol:
        marker = _MARKERS.get(tr.marker.symbol, "o")
    size = (tr.marker.size or 6) / 1.5 if marker and tr.marker is not None else None
    y = np.asarray(tr.y, dtype=float)
    x = np.arange(len(y)) if tr.x is None else np.asarray(tr.x, dtype=float)  # plotly: x defaults to 0..n-1
    ax.plot(x, y, linestyle=style, marker=marker,
            markersize=size, color=line.color or (tr.marker.color if tr.marker else None),
            linewidth=(line.width or 2) * 0.75, alpha=tr.opacity if tr.opacity is not None else 1.0,
            label=tr.name if tr.showlegend is not False else None)


def _draw_heatmap(ax: Any, tr) -> None:
    z = np.asarray(tr.z, dtype=float)
    x, x_labels = _axis_values(tr.x, z.shape[1])
    y, y_labels = _axis_values(tr.y, z.shape[0])
    if x_labels:
        ax.set_xticks(x, x_labels)
    if y_labels:
        ax.set_yticks(y, y_labels)
    from matplotlib.colors import LinearSegmentedColormap

    scale = tr.colorscale or ((0, "#440154"), (1, "#fde725"))
    cmap = LinearSegmentedColormap.from_list("c", [(float(p), c) for p, c in scale]).with_extremes(bad="#ffffff")
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(z), cmap=cmap, vmin=tr.zmin, vmax=tr.zmax, shading="nearest")
    cb = ax.figure.colorbar(mesh, ax=ax, fraction=0.04)
    if tr.colorbar is not None and tr.colorbar.title is not None and tr.colorbar.title.text:
        cb.set_label(tr.colorbar.title.text)
    for i, row in enumerate(tr.text if tr.text is not None else ()):
        for j, txt in enumerate(row):
            if txt:
                ax.text(x[j], y[i], txt, ha="center", va="center", fontsize=7)


def _draw_bar(ax: Any, tr) -> None:
    ax.bar([str(v) for v in tr.x], tr.y, color=(tr.marker.color if tr.marker else None), label=tr.name)


def _draw_shape(ax: Any, sh) -> None:
    color = _rgba(sh.line.color if sh.line else None) or "#444"
    if sh.type == "line":
        style = _DASH.get(sh.line.dash if sh.line else None, "-")
        z = 0.5 if sh.layer == "below" else 2.5
        if sh.yref == "paper":
            ax.axvline(sh.x0, color=color, linestyle=style, linewidth=1, zorder=z)
        elif sh.xref == "paper":
            ax.axhline(sh.y0, color=color, linestyle=style, linewidth=1, zorder=z)
        else:
            ax.plot([sh.x0, sh.x1], [sh.y0, sh.y1], color=color, linestyle=style, linewidth=1)
    elif sh.type == "rect" and sh.yref == "paper":
        ax.axvspan(sh.x0, sh.x1, color=_rgba(sh.fillcolor) or (0.8, 0.2, 0.2, 0.1), linewidth=0)


def _draw_annotation(ax: Any, an, lay) -> None:
    x = an.x if an.xref != "paper" else None
    y = an.y if an.yref != "paper" else None
    if y is not None and lay.yaxis.type == "log":
        y = 10**y  # plotly gives annotation positions on log axes as log10
    if x is not None and lay.xaxis.type == "log":
        x = 10**x
    trans = (ax.get_xaxis_transform() if an.yref == "paper" else ax.get_yaxis_transform() if an.xref == "paper"
             else ax.transData)
    ax.text(x if x is not None else an.x, y if y is not None else an.y, an.text, transform=trans, fontsize=8,
            color="#333", ha="left" if an.xanchor == "left" else "center", va="bottom")


def _style_axes(ax: Any, lay) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    plain = FuncFormatter(lambda v, _: _short_number(v))
    for axis, spec, setter, limits in ((ax.xaxis, lay.xaxis, ax.set_xscale, ax.get_xlim),
                                       (ax.yaxis, lay.yaxis, ax.set_yscale, ax.get_ylim)):
        if spec.type == "log":
            setter("log")
            lo, hi = limits()
            decades = np.log10(max(hi, 1e-12) / max(lo, 1e-12))
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0) if decades < 2 else (1.0,)))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        if spec.showticklabels is False:
            axis.set_ticklabels([])
        if spec.dtick is not None and spec.type != "log":
            from matplotlib.ticker import MultipleLocator

            axis.set_major_locator(MultipleLocator(float(spec.dtick)))
        if spec.tickvals is not None:
            axis.set_ticks(list(spec.tickvals))
            axis.set_ticklabels(list(spec.ticktext) if spec.ticktext is not None else [f"{v:g}" for v in spec.tickvals])


def wrap_title(text: str, width: int = 70) -> str:
    """A title broken into lines of at most ``width`` characters (plotly's ``<br>`` breaks kept)."""
    lines = text.replace("<br>", "\n").splitlines() or [""]
    return "\n".join(part for line in lines for part in (textwrap.wrap(line, width) or [""]))


def render(figs: Sequence[Any], columns: int = 2, width: float = 6.4, height: float = 3.8) -> Any:
    """A matplotlib figure with the plotly figures in a grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = (len(figs) + columns - 1) // columns
    cols = min(columns, len(figs))
    mfig = Figure(figsize=(width * cols, height * rows))
    FigureCanvasAgg(mfig)
    axes = mfig.subplots(rows, cols, squeeze=False)
    for ax, fig in zip(axes.flat, figs, strict=False):
        _draw(ax, fig)
    for ax in list(axes.flat)[len(figs):]:
        ax.axis("off")
    mfig.tight_layout()
    return mfig


def save_png(figs: Any, path: str | Path, columns: int = 2, dpi: int = 110) -> Path:
    """Render one or several plotly figures to a PNG file."""
    import plotly.graph_objects as go

    figs = [figs] if isinstance(figs, go.Figure) else list(figs)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    render(figs, columns).savefig(p, dpi=dpi)
    return p


def png_bytes(fig: Any, dpi: int = 80, colors: int | None = 256) -> bytes:
    """One plotly figure as PNG bytes: matplotlib at a modest ``dpi``, reduced to a ``colors`` palette (about
    three times smaller than full colour, and the figures use a few dozen colours anyway)."""
    buf = io.BytesIO()
    render([fig], columns=1).savefig(buf, dpi=dpi, format="png")
    return _palette(buf.getvalue(), colors) if colors else buf.getvalue()


def _palette(png: bytes, colors: int) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        small = im.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    small.save(out, format="png", optimize=True)
    return out.getvalue()


def stitch(tiles: Sequence[bytes], path: str | Path, columns: int = 2) -> Path:
    """PNG tiles (of one figure each) laid out in a grid of ``columns`` and saved as one PNG file."""
    from PIL import Image

    images = [Image.open(io.BytesIO(t)).convert("RGB") for t in tiles]
    cols = max(1, min(columns, len(images)))
    rows = (len(images) + cols - 1) // cols
    w, h = max(i.width for i in images), max(i.height for i in images)
    sheet = Image.new("RGB", (w * cols, h * rows), "white")
    for k, im in enumerate(images):
        sheet.paste(im, ((k % cols) * w, (k // cols) * h))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(p, format="png", optimize=True)
    return p
