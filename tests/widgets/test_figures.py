"""Figure builders: every method renders, log-axis labels sit where plotly expects them, static PNGs work."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("plotly")

from widgets.figures import (  # noqa: E402
    attention_figure,
    factor_figure,
    method_specs,
    ood_figure,
    rotation_figure,
    wavelength_figure,
)
from widgets.static import save_png  # noqa: E402
from workbench.rope import available_methods, make_spec  # noqa: E402

GEOMETRY = make_spec("default", head_dim=64, rope_theta=1e5, original_max_position_embeddings=8192, target_length=32768)


def test_every_method_renders_every_figure(tmp_path):
    specs = method_specs(GEOMETRY, available_methods())
    figs = [factor_figure(specs, "longrope")]
    for spec in specs.values():
        figs += [wavelength_figure(spec), ood_figure(spec), attention_figure(spec)]
    figs.append(rotation_figure(specs["default"]))
    path = save_png(figs, tmp_path / "all.png", columns=4)
    assert path.stat().st_size > 50_000
    assert len(factor_figure(specs).data) == len(specs)


def test_log_axis_annotations_use_log10():
    fig = wavelength_figure(GEOMETRY)
    labels = {a.text: a.y for a in fig.layout.annotations if a.xref == "paper"}
    assert labels["L0 = 8192"] == pytest.approx(math.log10(8192))
    assert labels["target = 32768"] == pytest.approx(math.log10(32768))


def test_ood_map_counts_pairs_beyond_training():
    fig = ood_figure(GEOMETRY)
    assert "12 pairs beyond training" in fig.layout.title.text
    linear = ood_figure(make_spec("linear", head_dim=64, rope_theta=1e5, original_max_position_embeddings=8192,
                                  target_length=32768))
    assert "0 pairs beyond training" in linear.layout.title.text
