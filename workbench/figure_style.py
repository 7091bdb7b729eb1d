"""How figures look, shared by the front end (``widgets.figures``) and the results that draw themselves
(``.figures()``): the layout every figure starts from, each method's colour and line style (declared by the
method, ``rope/<method>.py``), and reference lines. No plotly import: these are plain values and functions that
take a figure."""

from __future__ import annotations

import math
from typing import Any

from .rope import Look, available_methods, get_method

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
BASE_LAYOUT = dict(template="plotly_white", height=340, margin=dict(l=60, r=20, t=50, b=50),
                   legend=dict(orientation="h", y=-0.25, x=0))


def look_of(method: str) -> Look | None:
    """The look a registered method declares (rope/<method>.py), None for a label that names no method."""
    return get_method(method).spec_cls.look if method in available_methods() else None


def method_of(label: str) -> str:
    """The method a curve's label names ("yarn s=4 (PPL 3.1)" -> "yarn"); "no scaling" is the default RoPE."""
    if label.lower().startswith(("no scaling", "original")):
        return "default"
    return label.split(" ")[0].split("(")[0].strip().lower()


def color_of(label: str, i: int = 0, other: str | None = None) -> str:
    """The colour of the method a label names, else ``other`` or the ``i``-th of the palette."""
    look = look_of(method_of(label))
    return look.color if look is not None else other or PALETTE[i % len(PALETTE)]


def style_of(label: str, i: int = 0, bold: bool = False) -> dict:
    """Scatter keyword arguments (line, mode, marker) telling a method's curve apart from the others'."""
    look = look_of(method_of(label)) or Look()
    out = dict(line=dict(color=color_of(label, i), dash=look.dash, width=4.0 if bold else look.width),
               mode="lines+markers" if look.marker else "lines")
    if look.marker:
        out["marker"] = dict(symbol=look.marker, size=6)
    return out


def method_label(method: str) -> str:
    """A method's short label ("PI", "YaRN"), or the name itself when it names no registered method."""
    return get_method(method).spec_cls.display_name() if method in available_methods() else method


def vline(fig: Any, x: float, text: str, color: str = "#444", log_axis: bool = False) -> None:
    """A dotted vertical reference line at ``x``, labelled at the top."""
    fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, yref="paper", line=dict(color=color, dash="dot", width=1))
    fig.add_annotation(x=math.log10(x) if log_axis else x, y=1, yref="paper", text=text, showarrow=False,
                       yanchor="bottom", font=dict(size=10))


def hline(fig: Any, y: float, text: str, color: str = "#444", log_axis: bool = False) -> None:
    """A dashed horizontal reference line at ``y``, labelled at the left."""
    fig.add_shape(type="line", x0=0, x1=1, xref="paper", y0=y, y1=y, line=dict(color=color, dash="dash", width=1))
    # plotly places annotations on a log axis at log10 of the value (shapes take the value itself)
    fig.add_annotation(x=0, xref="paper", y=math.log10(y) if log_axis else y, text=text, showarrow=False,
                       xanchor="left", yanchor="bottom", font=dict(size=10))
