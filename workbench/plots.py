"""Figures the library draws itself (plotly, imported when one is drawn), for run folders and the front end alike:
their PNG comes from the same figure object (:func:`workbench.static.save_png`)."""

from __future__ import annotations

import math
from typing import Any

from .figure_style import BASE_LAYOUT, PALETTE


def training_curve_figure(history: list[dict], title: str = "Teaching model training") -> Any:
    """Training loss per step and held-out loss (ln PPL) where it was measured."""
    import plotly.graph_objects as go

    fig = go.Figure(layout=BASE_LAYOUT)
    fig.add_scatter(x=[h["step"] for h in history], y=[h["loss"] for h in history], name="train loss",
                    mode="lines", line=dict(color=PALETTE[0], width=1.2))
    held = [h for h in history if "heldout_ppl" in h]
    if held:
        fig.add_scatter(x=[h["step"] for h in held], y=[math.log(h["heldout_ppl"]) for h in held],
                        name="held-out loss at L0", mode="lines+markers", line=dict(color=PALETTE[3], width=2.5))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss (nats)")
    return fig


def factor_curves_figure(curves: dict[str, Any], title: str = "Factors per pair") -> Any:
    """Per-pair factor lists overlaid (a pipeline's stages, long against recovered short factors)."""
    import plotly.graph_objects as go

    fig = go.Figure(layout={**BASE_LAYOUT, "title": title, "xaxis_title": "pair i", "yaxis_title": "factor λ"})
    for label, factors in curves.items():
        fig.add_scatter(y=list(factors), name=label)
    return fig
