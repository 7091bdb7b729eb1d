"""The evaluation's figures (plotly, imported when one is drawn) and its HTML table: perplexity by length, loss by
position, needle grid, attention entropy. The results draw themselves with them (``.figures()``); the front end
re-exports them (``widgets.figures``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..figure_style import BASE_LAYOUT, color_of, vline


def ppl_by_length_figure(results: Iterable, original_length: int | None = None) -> Any:
    """Perplexity against evaluation length, one line per method (log y)."""
    import plotly.graph_objects as go

    fig = go.Figure(layout=BASE_LAYOUT)
    by: dict[str, list] = {}
    for r in results:
        by.setdefault(r.label, []).append(r)
    for i, (label, rs) in enumerate(by.items()):
        rs = sorted(rs, key=lambda r: r.length)
        fig.add_scatter(x=[r.length for r in rs], y=[r.ppl for r in rs], name=label, mode="lines+markers",
                        line=dict(color=color_of(label, i), width=2.5), marker=dict(size=8))
    if original_length:
        vline(fig, original_length, "L0", log_axis=True)
    lengths = sorted({r.length for rs in by.values() for r in rs})
    fig.update_layout(title="Perplexity by evaluation length", xaxis_title="tokens", yaxis_title="perplexity",
                      yaxis_type="log", xaxis_type="log", xaxis_tickvals=lengths,
                      xaxis_ticktext=[f"{L // 1024}k" if L >= 1024 else str(L) for L in lengths])
    return fig


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Centred moving average; the window shrinks at the ends so every point keeps its own position."""
    half = window // 2
    out = []
    for k in range(len(values)):
        part = values[max(0, k - half):k + half + 1]
        out.append(sum(part) / len(part))
    return out


def position_loss_figure(results: Iterable, original_length: int | None = None, smooth: int = 5) -> Any:
    """Mean loss per position bucket (raw, faint) and its moving average over ``smooth`` buckets: where beyond
    L0 a method breaks."""
    import plotly.graph_objects as go

    results = list(results)
    fig = go.Figure(layout=BASE_LAYOUT)
    for i, r in enumerate(results):
        x = [(k + 0.5) * r.bucket_size for k in range(len(r.per_position_nll))]
        color = color_of(r.label, i)
        if smooth > 1:
            fig.add_scatter(x=x, y=r.per_position_nll, name=f"{r.label} (raw)", mode="lines", opacity=0.3,
                            showlegend=False, line=dict(color=color, width=1), hoverinfo="skip")
        fig.add_scatter(x=x, y=moving_average(r.per_position_nll, smooth) if smooth > 1 else r.per_position_nll,
                        name=f"{r.label} (PPL {r.ppl:.1f})", mode="lines", line=dict(color=color, width=2.5))
    if original_length:
        vline(fig, original_length, "L0")
    length = max((r.length for r in results), default=0)
    note = f" (moving average of {smooth} buckets; faint: raw)" if smooth > 1 else ""
    fig.update_layout(title=f"Loss by position at {length} tokens{note}", xaxis_title="position",
                      yaxis_title="mean NLL (nats)")
    return fig


def entropy_heatmap_figure(result, baseline=None) -> Any:
    """Mean attention entropy per layer (rows) and head (columns); with ``baseline``: the difference."""
    import plotly.graph_objects as go

    z = np.array(result.layer_head())
    title = f"Attention entropy by layer and head: {_at(result)}"
    scale, zmid = "Viridis", None
    if baseline is not None:
        z = z - np.array(baseline.layer_head())
        title = f"Entropy change vs {baseline.label} (nats): {_at(result)}"
        scale, zmid = [[0, "#2166ac"], [0.5, "#f7f7f7"], [1, "#b2182b"]], 0.0
    lim = float(np.nanmax(np.abs(z))) if baseline is not None else None
    fig = go.Figure(layout={**BASE_LAYOUT, "height": 360})
    fig.add_heatmap(z=z, x=list(range(z.shape[1])), y=result.layers, colorscale=scale, zmid=zmid,
                    zmin=-lim if lim else None, zmax=lim if lim else None,
                    colorbar=dict(title="nats"), name="entropy")
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer")
    fig.update_xaxes(dtick=1)  # heads and layers are whole numbers
    fig.update_yaxes(dtick=1)
    return fig


def _at(result) -> str:
    """``label @ length``, unless the label already says where ("no scaling @ 1024")."""
    return result.label if "@" in result.label else f"{result.label} @ {result.length}"


def entropy_position_figure(results: Iterable, original_length: int | None = None) -> Any:
    """Mean entropy (over layers and heads) by query position, one line per setting, and the uniform bound."""
    import plotly.graph_objects as go

    results = list(results)
    fig = go.Figure(layout=BASE_LAYOUT)
    for i, r in enumerate(results):
        x = [(k + 0.5) * r.bucket_size for k in range(len(r.rows_per_bucket))]
        fig.add_scatter(x=x, y=r.by_position(), name=r.label, mode="lines+markers", marker=dict(size=4),
                        line=dict(color=color_of(r.label, i), width=2.5 if i else 2,
                                  dash="dot" if "without" in r.label else "dash" if "logits ×" in r.label else None))
    if results:
        r = max(results, key=lambda r: r.length)
        x = [(k + 0.5) * r.bucket_size for k in range(len(r.rows_per_bucket))]
        fig.add_scatter(x=x, y=r.uniform_reference(), name="uniform over the prefix", mode="lines",
                        line=dict(color="#bbbbbb", dash="dash", width=1))
    if original_length:
        vline(fig, original_length, "L0")
    fig.update_layout(title="Entropy by query position (mean of layers, heads)",
                      xaxis_title="query position", yaxis_title="entropy (nats)")
    return fig


def needle_heatmap_figure(result) -> Any:
    """Needle-in-a-haystack accuracy on the depth x length grid, cells annotated."""
    import plotly.graph_objects as go

    z = np.array(result.accuracy)
    text = [[f"{v:.0%}" for v in row] for row in z]
    fig = go.Figure(layout={**BASE_LAYOUT, "height": 340})
    fig.add_heatmap(z=z, x=[str(L) for L in result.lengths], y=[f"{d:.0%}" for d in result.depths], zmin=0, zmax=1,
                    colorscale=[[0, "#b2182b"], [0.5, "#fddbc7"], [1, "#1a9850"]], text=text,
                    texttemplate="%{text}", colorbar=dict(title="accuracy"), name="needle")
    fig.update_layout(title=f"Needle retrieval: {result.label}", xaxis_title="context length (tokens)",
                      yaxis_title="needle depth")
    return fig


def passkey_table(results: Iterable) -> str:
    """An HTML table: one row per setting, passkey accuracy per length."""
    import html as _html

    results = list(results)
    lengths = sorted({L for r in results for L in r.lengths})
    head = "".join(f"<th>{L}</th>" for L in lengths)
    rows = []
    for r in results:
        by = dict(zip(r.lengths, r.accuracy, strict=True))
        n = len(r.trials) // max(1, len(r.lengths))
        cells = "".join(f"<td>{by[L]:.0%}</td>" if L in by else "<td></td>" for L in lengths)
        rows.append(f"<tr><td>{_html.escape(r.label)}</td>{cells}<td>{n}</td></tr>")
    return (f"<table><tr><th>passkey accuracy</th>{head}<th>trials per length</th></tr>{''.join(rows)}</table>")
