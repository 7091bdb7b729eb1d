"""Figures are shown as data: one bundle per figure (plotly JSON + PNG + text), no widget state, no plotly.js,
small enough that an executed notebook stays small."""

from __future__ import annotations

import base64
import json
import math

import pytest

pytest.importorskip("plotly")

import plotly.graph_objects as go  # noqa: E402

from widgets import display as D  # noqa: E402
from widgets.figures import (  # noqa: E402
    factor_figure,
    method_specs,
    ood_figure,
    rotation_figure,
    wavelength_figure,
)
from workbench.rope import make_spec  # noqa: E402

GEOMETRY = make_spec("default", head_dim=64, rope_theta=1e5, original_max_position_embeddings=8192, target_length=32768)


@pytest.fixture()
def shown(monkeypatch):
    """What show() hands to IPython's display, in order."""
    import IPython.display

    out = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: out.append((obj, raw)))
    return out


def typical_figures() -> dict[str, go.Figure]:
    specs = method_specs(GEOMETRY, ["default", "linear", "ntk", "yarn", "llama3", "longrope"])
    return {"wavelength": wavelength_figure(specs["yarn"]), "factors": factor_figure(specs, "longrope"),
            "ood": ood_figure(specs["default"]), "rotation": rotation_figure(GEOMETRY)}


def test_show_displays_one_bundle_per_figure_and_saves_them_side_by_side(shown, tmp_path):
    figs = list(typical_figures().values())[:3]
    assert D.show(figs, "three", tmp_path, live=True) is None  # nothing echoed after the figures
    assert len(shown) == 3 and all(raw for _, raw in shown)
    for bundle, _ in shown:
        assert set(bundle) == {D.PLOTLY_MIME, "image/png", "text/plain"}  # no widget view, no HTML with a script
        assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
        text = json.dumps(bundle)
        assert "plotly.js" not in text and "<script" not in text and "widget" not in text
        assert bundle[D.PLOTLY_MIME]["data"] and bundle["text/plain"].startswith("<figure: ")
    saved = tmp_path / "three.png"
    assert saved.stat().st_size > 10_000
    from PIL import Image

    with Image.open(saved) as im:  # two to a row: two rows
        one = Image.open(__import__("io").BytesIO(base64.b64decode(shown[0][0]["image/png"])))
        assert (im.width, im.height) == (2 * one.width, 2 * one.height)


def test_a_typical_figure_costs_tens_of_kilobytes():
    for name, fig in typical_figures().items():
        bundle = D.mime_bundle(fig)
        size = len(json.dumps(bundle[D.PLOTLY_MIME])) + len(bundle["image/png"])
        assert size < 100_000, (name, size)
        assert bundle[D.PLOTLY_MIME]["layout"]["template"] == D.TEMPLATE  # not plotly's 7 kB named template


def test_long_lines_are_thinned_keeping_their_envelope_and_nan_becomes_null():
    y = [math.sin(k / 7) + (3.0 if k == 2345 else 0.0) for k in range(5000)]
    y[10] = float("nan")
    fig = go.Figure(go.Scatter(x=list(range(5000)), y=y, mode="lines"))
    trace = D.figure_json(fig)["data"][0]
    assert len(trace["y"]) <= D.MAX_POINTS + 2 and trace["x"][0] == 0 and trace["x"][-1] == 4999
    assert max(v for v in trace["y"] if v is not None) == pytest.approx(max(v for v in y if v == v), rel=1e-4)
    assert 2345 in trace["x"]  # the spike survives
    short = D.figure_json(go.Figure(go.Scatter(y=[1.0, float("nan"), 3.0])))["data"][0]
    assert short["y"] == [1.0, None, 3.0]
    heat = D.figure_json(ood_figure(GEOMETRY))["data"][0]
    assert isinstance(heat["z"], list) and isinstance(heat["z"][0], list)  # plain lists, not base64 arrays


def test_markdown_is_rendered(shown):
    from IPython.display import Markdown

    D.markdown("| a | b |\n|---|---|\n| 1 | 2 |")
    assert isinstance(shown[0][0], Markdown)


def test_a_long_title_is_broken_into_lines_not_clipped():
    long = "Held-out: searched − YaRN perplexity per window, below 0 where the searched factors are better"
    layout = D.figure_json(go.Figure(layout={"title": long, "width": 520, "margin": {"t": 50}}))["layout"]
    lines = layout["title"]["text"].split("<br>")
    assert len(lines) > 1 and all(len(line) <= 520 / 9 for line in lines) and " ".join(lines) == long
    assert layout["margin"]["t"] > 50
    short = D.figure_json(go.Figure(layout={"title": "Fitness", "width": 520}))["layout"]
    assert short["title"]["text"] == "Fitness"
