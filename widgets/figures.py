"""Figure builders: plotly figures from library results, one source for notebooks, panels and static files.

:func:`widgets.display.show` displays them as data (plotly JSON + PNG), panels redraw them whole in an output
area (:class:`widgets.panel.FigureOutput`), and :func:`workbench.static.save_png` renders the same figure objects
as PNGs with matplotlib. Figures the library draws itself (a result's ``.figures()``, the training curve) are
re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from workbench.evaluate.figures import (
    entropy_heatmap_figure,
    entropy_position_figure,
    moving_average,
    needle_heatmap_figure,
    passkey_table,
    position_loss_figure,
    ppl_by_length_figure,
)
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
from workbench.plots import factor_curves_figure, training_curve_figure
from workbench.rope import RopeSpec, su_attention_factor, yarn_attention_factor
from workbench.rope import (
    method_specs as method_specs,  # re-exported: the notebooks and widgets draw the specs it makes
)
from workbench.rope.diagnostics import ood_angle_map, pair_diagnostics
from workbench.search.results import heldout_figure, search_factors_figure, search_progress_figure

__all__ = [  # the figure builders, and what the widgets and notebooks style their own figures with
    "BASE_LAYOUT", "PALETTE", "attention_figure", "color_of", "hline", "vline", "entropy_heatmap_figure", "entropy_position_figure",
    "factor_curves_figure", "factor_figure", "heldout_figure", "look_of", "method_label", "method_of", "method_specs",
    "moving_average", "needle_heatmap_figure", "ood_figure", "passkey_table", "position_loss_figure",
    "ppl_by_length_figure", "rotation_figure", "search_factors_figure", "search_progress_figure", "style_of",
    "training_curve_figure", "wavelength_figure",
]

def wavelength_figure(spec: RopeSpec) -> go.Figure:
    """Per-pair wavelength before and after rescaling, against L0 and the target; critical pair marked."""
    d = pair_diagnostics(spec)
    fig = go.Figure(layout=BASE_LAYOUT)
    fig.add_scatter(x=d.pair, y=d.wavelength, name="original 2π/θᵢ", mode="lines+markers",
                    line=dict(color="#7f7f7f"), marker=dict(size=4))
    fig.add_scatter(x=d.pair, y=d.scaled_wavelength, name=f"{spec.method}", mode="lines+markers",
                    line=dict(color=color_of(spec.method), width=3), marker=dict(size=5))
    hline(fig, spec.original_max_position_embeddings, f"L0 = {spec.original_max_position_embeddings}", log_axis=True)
    hline(fig, spec.target_length, f"target = {spec.target_length}", "#d62728", log_axis=True)
    vline(fig, d.critical_dim, f"critical pair {d.critical_dim}")
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
    hline(fig, any_spec.factor, f"s = {any_spec.factor:g}", "#bbbbbb")
    fig.layout.shapes[-1].layer = "below"  # under the curves, so PI's λ = s line shows on it
    fig.update_layout(title="Rescale factor per pair  λᵢ = θᵢ / θ'ᵢ", xaxis_title="pair i (fast → slow)",
                      yaxis_title="λᵢ")
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
    vline(fig, spec.original_max_position_embeddings, "L0")
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
    vline(fig, spec.original_max_position_embeddings, "L0: end of training")
    fig.update_layout(title="cos(n·θᵢ): slow pairs turn less than once within L0",
                      xaxis_title="position n", yaxis_title="cos(n θᵢ)")
    return fig
