"""The figures a student needs to see why a model breaks beyond its training length (notebooks 01 and 02).

Each builder returns plain plotly figures (one panel each, so they render as static PNGs too); the maths is
in :mod:`workbench.lessons`.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from workbench import lessons
from workbench.rope import RopeSpec

from .figures import BASE_LAYOUT, color_of, vline

TRAINED, NEW, CIRCLE = "#1f77b4", "#d62728", "#dddddd"


def teaching_pairs(spec: RopeSpec) -> list[int]:
    """Pairs worth drawing: the fastest, the last that completes a turn within L0, the first that does not,
    the slowest."""
    t = lessons.turns(spec)
    picks = [0, t.last_full_turn, t.first_partial, t.n_pairs - 1]
    return sorted({p for p in picks if 0 <= p < t.n_pairs})


def pair_circle_figure(spec: RopeSpec, pair: int, seq_len: int | None = None) -> go.Figure:
    """One pair as the point (cos, sin) on the unit circle: the arc its angles covered in training (blue) and
    the arc a ``seq_len``-token input adds (red) under ``spec``."""
    arc = lessons.pair_arc(spec, pair, seq_len)
    fig = go.Figure(layout={**BASE_LAYOUT, "height": 320, "showlegend": True})
    fig.add_scatter(x=np.cos(np.linspace(0, 2 * math.pi, 200)), y=np.sin(np.linspace(0, 2 * math.pi, 200)),
                    mode="lines", line=dict(color=CIRCLE, width=1), showlegend=False, hoverinfo="skip")
    x, y = lessons.arc_points(0.0, arc.trained)
    seen = "every angle" if arc.full_turn else f"0 to {math.degrees(arc.trained):.0f}°"
    fig.add_scatter(x=x, y=y, mode="lines", line=dict(color=TRAINED, width=5), name=f"seen in training ({seen})")
    if arc.new > 0:
        x, y = lessons.arc_points(arc.trained, arc.trained + arc.new, radius=1.08)
        fig.add_scatter(x=x, y=y, mode="lines", line=dict(color=NEW, width=5),
                        name=f"new at {arc.seq_len} tokens (+{math.degrees(arc.new):.0f}°)")
    wavelength = 2 * math.pi / float(spec.original_inv_freq()[pair])
    # equal scales on a square plot area (constrain="domain"), not a wide x range around a small circle
    fig.update_layout(title=f"pair {pair}: one turn every {wavelength:,.0f} tokens", xaxis_title="cos",
                      yaxis_title="sin", xaxis=dict(range=[-1.3, 1.3], constrain="domain"),
                      yaxis=dict(range=[-1.3, 1.3], scaleanchor="x", constrain="domain"), legend=dict(orientation="h", y=-0.3, x=0))
    return fig


def pair_circle_figures(spec: RopeSpec, pairs: list[int] | None = None, seq_len: int | None = None) -> list[go.Figure]:
    """:func:`pair_circle_figure` for a few pairs (default: :func:`teaching_pairs`)."""
    return [pair_circle_figure(spec, p, seq_len) for p in (pairs or teaching_pairs(spec))]


def logit_decay_figure(spec: RopeSpec, points: int = 2000) -> go.Figure:
    """RoPE's long-term decay: the logit between q = k = all ones at relative distance d, divided by its value
    at d = 0, up to the target length."""
    d = np.unique(np.geomspace(1, spec.target_length - 1, points).round())
    fig = go.Figure(layout=BASE_LAYOUT)
    fig.add_scatter(x=d, y=lessons.decay_logit(spec, d), mode="lines", line=dict(color=TRAINED, width=1.5),
                    name="q = k = ones")
    vline(fig, spec.original_max_position_embeddings, "L0", log_axis=True)
    fig.update_layout(title="Logit of two equal vectors by distance: long-term decay", xaxis_title="relative distance d",
                      yaxis_title="logit / logit at d = 0", xaxis_type="log")
    return fig


def logit_extrapolation_figures(specs: dict[str, RopeSpec], points: int = 2000, seed: int = 0) -> list[go.Figure]:
    """A logit curve fitted to random values within L0, read (1) with the original frequencies beyond L0 and
    (2) with each rescaled method's frequencies up to its target length (the Position Interpolation argument).

    ``specs`` maps a label to a spec; ``"default"`` must be among them (it defines the fit and L0).
    """
    base = specs["default"]
    L0, L = base.original_max_position_embeddings, base.target_length
    coef = lessons.fit_logit(base, seed=seed)
    d = np.unique(np.linspace(0, L - 1, points).round())
    plain = lessons.fitted_logit(coef, base, d)
    extra = go.Figure(layout=BASE_LAYOUT)
    extra.add_scatter(x=d[d < L0], y=plain[d < L0], mode="lines", line=dict(color=TRAINED, width=1.5),
                      name="within L0 (fitted)")
    extra.add_scatter(x=d[d >= L0], y=plain[d >= L0], mode="lines", line=dict(color=NEW, width=1.5),
                      name="beyond L0 (extrapolated)")
    vline(extra, L0, "L0")
    extra.update_layout(title="No rescaling: a logit curve fitted within L0, read beyond it",
                        xaxis_title="relative distance d", yaxis_title="logit")
    inter = go.Figure(layout=BASE_LAYOUT)
    for i, (label, spec) in enumerate(specs.items()):
        if label != "default":
            inter.add_scatter(x=d, y=lessons.fitted_logit(coef, spec, d), mode="lines", name=label,
                              line=dict(color=color_of(label, i), width=1.5))
    vline(inter, L0, "L0")
    inter.update_layout(title=f"The same curve with each method's frequencies, up to {L} tokens",
                        xaxis_title="relative distance d", yaxis_title="logit × m²")
    return [extra, inter]


def entropy_growth_figure(spec: RopeSpec, scales: dict[str, float], sigma: float = 2.5) -> go.Figure:
    """Entropy of softmax attention over n keys with random logits, as n grows to the target length: one line per
    logit scale (``{"no attention factor": 1.0, "yarn": m**2, ...}``), and the entropy at L0 without one."""
    L0, L = spec.original_max_position_embeddings, spec.target_length
    n = np.unique(np.geomspace(8, L, 28).round().astype(int))
    fig = go.Figure(layout=BASE_LAYOUT)
    for i, (label, scale) in enumerate(scales.items()):
        fig.add_scatter(x=n, y=lessons.softmax_entropy(n, sigma, scale), mode="lines+markers", marker=dict(size=4),
                        name=f"{label} (logits × {scale:.3f})", line=dict(color=color_of(label, i), width=2))
    at_L0 = float(lessons.softmax_entropy(np.array([L0]), sigma)[0])
    fig.add_shape(type="line", x0=0, x1=1, xref="paper", y0=at_L0, y1=at_L0, line=dict(color="#444", dash="dash", width=1))
    vline(fig, L0, "L0", log_axis=True)
    fig.update_layout(title=f"Entropy of attention over n keys (random logits, σ = {sigma:g})", xaxis_type="log",
                      xaxis_title="keys n", yaxis_title="entropy (nats)")
    return fig


def attention_sink_figure(weights: np.ndarray, label: str) -> go.Figure:
    """Mean attention weight on each of the first key positions (attention sinks)."""
    fig = go.Figure(layout=BASE_LAYOUT)
    fig.add_bar(x=list(range(len(weights))), y=list(map(float, weights)), marker=dict(color=TRAINED),
                name="mean attention weight")
    fig.update_layout(title=f"Attention on the first positions: {label}", xaxis_title="key position",
                      yaxis_title="mean weight", showlegend=False)
    return fig


__all__ = ["attention_sink_figure", "entropy_growth_figure", "logit_decay_figure", "logit_extrapolation_figures",
           "pair_circle_figure", "pair_circle_figures", "teaching_pairs"]
