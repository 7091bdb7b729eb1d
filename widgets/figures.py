"""Figure builders: plotly figures from library results, one source for notebooks, panels and static files.

:func:`widgets.display.show` displays them as data (plotly JSON + PNG), panels redraw them whole in an output
area (:class:`widgets.panel.FigureOutput`), and :func:`workbench.static.save_png` renders the same figure objects
as PNGs with matplotlib. Figures the library draws itself (a result's ``.figures()``, the training curve) are
re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import plotly.graph_objects as go

from workbench.figure_style import (
    BASE_LAYOUT,
    PALETTE,
    color_of,
    hline,
    look_of,
    method_label,
    method_of,
    style_of,
    vline,
)
from workbench.plots import training_curve_figure
from workbench.rope import RopeSpec, su_attention_factor, yarn_attention_factor
from workbench.rope import (
    method_specs as method_specs,  # re-exported: the notebooks and widgets draw the specs it makes
)
from workbench.rope.diagnostics import ood_angle_map, pair_diagnostics
from workbench.search.results import heldout_figure, search_factors_figure, search_progress_figure

__all__ = [  # the figure builders, and what the widgets and notebooks style their own figures with
    "BASE_LAYOUT", "PALETTE", "attention_figure", "color_of", "entropy_heatmap_figure", "entropy_position_figure",
    "factor_curves_figure", "factor_figure", "heldout_figure", "look_of", "method_label", "method_of", "method_specs",
    "moving_average", "needle_heatmap_figure", "ood_figure", "passkey_table", "position_loss_figure",
    "ppl_by_length_figure", "rotation_figure", "search_factors_figure", "search_progress_figure", "style_of",
    "training_curve_figure", "wavelength_figure",
]

_vline, _hline = vline, hline


def wavelength_figure(spec: RopeSpec) -> go.Figure:
    """Per-pair wavelength before and after rescaling, against L0 and the target; critical pair marked."""
    d = pair_diagnostics(spec)
    fig = go.Figure(layout=BASE_LAYOUT)
    fig.add_scatter(x=d.pair, y=d.wavelength, name="original 2π/θᵢ", mode="lines+markers",
                    line=dict(color="#7f7f7f"), marker=dict(size=4))
    fig.add_scatter(x=d.pair, y=d.scaled_wavelength, name=f"{spec.method}", mode="lines+markers",
                    line=dict(color=color_of(spec.method), width=3), marker=dict(size=5))
    _hline(fig, spec.original_max_position_embeddings, f"L0 = {spec.original_max_position_embeddings}", log_axis=True)
    _hline(fig, spec.target_length, f"target = {spec.target_length}", "#d62728", log_axis=True)
    _vline(fig, d.critical_dim, f"critical pair {d.critical_dim}")
    fig.update_layout(title="Wavelength per pair (tokens per turn)",
                      xaxis_title="pair i (fast → slow)", yaxis_title="wavelength (tokens)", yaxis_type="log")
    return fig


def factor_figure(specs: dict[str, RopeSpec], highlight: str | None = None) -> go.Figure:
    """Effective per-pair factor λᵢ = θᵢ / inv_freqᵢ at the target length, every spec overlaid."""
    fig = go.Figure(layout=BASE_LAYOUT)
    # drawn thickest first, the highlighted method last: a thin curve stays visible on a thick one
    order = sorted(enumerate(specs.items()), key=lambda t: (t[1][0] == highlight, -style_of(t[1][0])["line"]["width"]))
    for i, (label, spec) in order:
        d = pair_diagnostics(spec)
        bold = label == highlight
        fig.add_scatter(x=d.pair, y=d.effective_factor, name=label, **style_of(label, i, bold),
                        opacity=1.0 if bold or highlight is None else 0.75)
    any_spec = next(iter(specs.values()))
    _hline(fig, any_spec.factor, f"s = {any_spec.factor:g}", "#bbbbbb")
    fig.layout.shapes[-1].layer = "below"  # under the curves, so PI's λ = s line shows on it
    fig.update_layout(title="Rescale factor per pair  λᵢ = θᵢ / θ'ᵢ", xaxis_title="pair i (fast → slow)",
                      yaxis_title="λᵢ")
    return fig


def factor_curves_figure(curves: dict[str, Sequence[float]], title: str = "Factors per pair") -> go.Figure:
    """Per-pair factor lists overlaid (a pipeline's stages, long against recovered short factors)."""
    fig = go.Figure(layout={**BASE_LAYOUT, "title": title, "xaxis_title": "pair i", "yaxis_title": "factor λ"})
    for label, factors in curves.items():
        fig.add_scatter(y=list(factors), name=label)
    return fig


def ood_figure(spec: RopeSpec, n_positions: int = 96) -> go.Figure:
    """Angle reached / largest angle seen in training (log2), per pair and position; >0 is unseen."""
    positions, ratio = ood_angle_map(spec, n_positions)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log2(np.where(ratio > 0, ratio, np.nan))
    # the colour scale fits the data: symmetric around 0 (seen / unseen), ending at the largest |value|
    finite = np.abs(z[np.isfinite(z)])
    lim = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    # gaps (no angle yet, position 0) as null: NaN is not JSON
    z = [[None if not math.isfinite(v) else float(v) for v in row] for row in z]
    fig = go.Figure(layout={**BASE_LAYOUT, "height": 360})
    fig.add_heatmap(x=positions, y=np.arange(ratio.shape[0]), z=z, zmin=-lim, zmax=lim, zmid=0,
                    colorscale=[[0, "#2166ac"], [0.5, "#f7f7f7"], [1, "#b2182b"]],
                    colorbar=dict(title="log₂ angle / trained", len=0.9), hoverongaps=False,
                    name="OOD")
    _vline(fig, spec.original_max_position_embeddings, "L0")
    n_ood = int(pair_diagnostics(spec).out_of_distribution.sum())
    fig.update_layout(title=f"Unseen angles ({spec.method}): {n_ood} pairs beyond training",
                      xaxis_title="position", yaxis_title="pair i")
    return fig


def attention_figure(spec: RopeSpec, max_s: float = 64.0) -> go.Figure:
    """Attention factor as a function of s for the "su" and "yarn" policies; the current spec marked."""
    L0 = spec.original_max_position_embeddings
    s = np.exp(np.linspace(0, math.log(max_s), 80))
    fig = go.Figure(layout=BASE_LAYOUT)
    fig.add_scatter(x=s, y=[su_attention_factor(x, L0) for x in s], name=f"su: √(1 + ln s / ln {L0})",
                    line=dict(color=color_of("longrope")))
    fig.add_scatter(x=s, y=[yarn_attention_factor(x) for x in s], name="yarn: 0.1 ln s + 1",
                    line=dict(color=color_of("yarn")))
    m = spec.frequencies().attention_factor
    fig.add_scatter(x=[spec.factor], y=[m], name=f"{spec.method}: {m:.3f}", mode="markers",
                    marker=dict(size=13, color=color_of(spec.method), symbol="diamond", line=dict(width=1)))
    fig.update_layout(title="Attention factor m (cos, sin × m; logits × m²)", xaxis_title="extension ratio s",
                      yaxis_title="m", xaxis_type="log",
                      xaxis_tickvals=[v for v in (1, 2, 4, 8, 16, 32, 64, 128) if v <= max_s])
    return fig


def rotation_figure(spec: RopeSpec, pairs: Sequence[int] | None = None, n_points: int = 1200) -> go.Figure:
    """cos(n θᵢ) for a few pairs over positions 0..target: what RoPE rotates, and how slowly the last pairs turn."""
    theta = spec.original_inv_freq().double().numpy()
    if pairs is None:  # pairs whose wavelengths are about L0/8, L0/2, 2 L0, and the slowest pair
        wavelength = 2 * math.pi / theta
        L0 = spec.original_max_position_embeddings
        pairs = sorted({int(np.argmin(abs(np.log(wavelength / (L0 * f))))) for f in (1 / 8, 1 / 2, 2)}
                       | {spec.n_pairs - 1})
    n = np.linspace(0, spec.target_length, n_points)
    fig = go.Figure(layout=BASE_LAYOUT)
    for k, i in enumerate(pairs):
        fig.add_scatter(x=n, y=np.cos(n * theta[i]), name=f"pair {i} (wavelength {2 * math.pi / theta[i]:.0f})",
                        line=dict(color=PALETTE[k % len(PALETTE)], width=1.5))
    fig.add_shape(type="rect", x0=spec.original_max_position_embeddings, x1=spec.target_length, y0=0, y1=1,
                  yref="paper", fillcolor="rgba(214,39,40,0.08)", line=dict(width=0))
    _vline(fig, spec.original_max_position_embeddings, "L0: end of training")
    fig.update_layout(title="cos(n·θᵢ): slow pairs turn less than once within L0",
                      xaxis_title="position n", yaxis_title="cos(n θᵢ)")
    return fig


def ppl_by_length_figure(results: Iterable, original_length: int | None = None) -> go.Figure:
    """Perplexity against evaluation length, one line per method (log y)."""
    fig = go.Figure(layout=BASE_LAYOUT)
    by: dict[str, list] = {}
    for r in results:
        by.setdefault(r.label, []).append(r)
    for i, (label, rs) in enumerate(by.items()):
        rs = sorted(rs, key=lambda r: r.length)
        fig.add_scatter(x=[r.length for r in rs], y=[r.ppl for r in rs], name=label, mode="lines+markers",
                        line=dict(color=color_of(label, i), width=2.5), marker=dict(size=8))
    if original_length:
        _vline(fig, original_length, "L0", log_axis=True)
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


def position_loss_figure(results: Iterable, original_length: int | None = None, smooth: int = 5) -> go.Figure:
    """Mean loss per position bucket (raw, faint) and its moving average over ``smooth`` buckets: where beyond
    L0 a method breaks."""
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
        _vline(fig, original_length, "L0")
    length = max((r.length for r in results), default=0)
    note = f" (moving average of {smooth} buckets; faint: raw)" if smooth > 1 else ""
    fig.update_layout(title=f"Loss by position at {length} tokens{note}", xaxis_title="position",
                      yaxis_title="mean NLL (nats)")
    return fig


def entropy_heatmap_figure(result, baseline=None) -> go.Figure:
    """Mean attention entropy per layer (rows) and head (columns); with ``baseline``: the difference."""
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


def entropy_position_figure(results: Iterable, original_length: int | None = None) -> go.Figure:
    """Mean entropy (over layers and heads) by query position, one line per setting, and the uniform bound."""
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
        _vline(fig, original_length, "L0")
    fig.update_layout(title="Entropy by query position (mean of layers, heads)",
                      xaxis_title="query position", yaxis_title="entropy (nats)")
    return fig


def needle_heatmap_figure(result) -> go.Figure:
    """Needle-in-a-haystack accuracy on the depth x length grid, cells annotated."""
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
