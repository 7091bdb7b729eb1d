"""The matplotlib rendering of plotly figures (what nbconvert, GitHub and a reopened notebook show)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import plotly.graph_objects as go
import pytest

from workbench.static import render


def _one_axes(fig: go.Figure):
    mfig = render([fig], columns=1)
    ax = mfig.axes[0]
    plt.close(mfig)
    return ax


def test_a_figure_with_equal_scales_stays_round():
    circle = go.Figure(go.Scatter(x=[1, 0, -1, 0, 1], y=[0, 1, 0, -1, 0], mode="lines"),
                       layout=dict(yaxis=dict(scaleanchor="x")))
    assert _one_axes(circle).get_aspect() == 1.0
    assert _one_axes(go.Figure(go.Scatter(x=[0, 1], y=[0, 5]))).get_aspect() == "auto"


def test_a_tick_step_is_kept():
    fig = go.Figure(go.Scatter(x=[0, 1, 2, 3, 4], y=[5, 4, 3, 2, 1])).update_xaxes(dtick=1)
    assert list(_one_axes(fig).get_xticks()) == [float(k) for k in range(-1, 6)]  # whole generations, not halves


def test_every_kind_of_trace_and_shape_is_drawn():
    fig = go.Figure([go.Scatter(x=[0, 1, 2], y=[1, 2, 3], name="line", mode="lines+markers"),
                     go.Bar(x=["a", "b"], y=[1, 2], name="bars")])
    fig.add_shape(type="line", x0=1, x1=1, y0=0, y1=1, yref="paper", line=dict(dash="dash"))
    fig.add_shape(type="rect", x0=0, x1=0.5, y0=0, y1=1, yref="paper")
    fig.add_annotation(x=1, y=1, yref="paper", text="L0", showarrow=False)
    ax = _one_axes(fig.update_layout(title="t"))
    assert len(ax.lines) >= 2 and len(ax.patches) >= 2 and any(t.get_text() == "L0" for t in ax.texts)
    heat = _one_axes(go.Figure(go.Heatmap(z=[[0, 1], [2, 3]], x=["p", "q"], y=[0, 1], text=[["", "x"], ["", ""]])))
    assert heat.collections and [t.get_text() for t in heat.get_xticklabels()] == ["p", "q"]


def test_a_trace_the_renderer_cannot_draw_is_refused_not_dropped(tmp_path):
    from workbench.static import StaticRenderError, save_png

    fig = go.Figure(layout=dict(title="shares"))
    fig.add_scatter(y=[1, 2], name="line")
    fig.add_pie(values=[1, 2], name="a pie")
    with pytest.raises(StaticRenderError, match="a 'pie' trace \\(a pie\\) in 'shares' cannot be drawn"):
        save_png(fig, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_the_training_curve_png_is_the_figure_the_notebook_shows(tmp_path):
    from workbench.plots import training_curve_figure
    from workbench.static import render

    history = [{"step": s, "loss": 5.0 - s / 10} for s in range(1, 11)] + [{"step": 10, "loss": 4.0, "heldout_ppl": 60.0}]
    fig = training_curve_figure(history, "t")
    ax = render([fig]).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["train loss", "held-out loss at L0"]
    assert list(ax.get_lines()[0].get_ydata()) == [h["loss"] for h in history]
