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


def test_result_figures_render(tmp_path):
    import torch

    from widgets.figures import (
        entropy_heatmap_figure,
        entropy_position_figure,
        needle_heatmap_figure,
        passkey_table,
        training_curve_figure,
    )
    from workbench.entropy import EntropyResult
    from workbench.evaluate import NeedleGridResult, PasskeyResult

    ent = EntropyResult("yarn", 512, [0, 1], 2, 64, torch.rand(2, 2, 8).tolist(), torch.rand(2, 2, 8).tolist(), [64] * 8)
    base = EntropyResult("no scaling", 512, [0, 1], 2, 64, torch.rand(2, 2, 8).tolist(), torch.rand(2, 2, 8).tolist(),
                         [64] * 8)
    grid = NeedleGridResult("yarn", [0.0, 0.5, 1.0], [256, 512], [[1, 0.5], [0, 1], [1, 1]], [[1, 2], [3, 4], [5, 6]],
                            [], 1.0)
    history = [{"step": i, "loss": 8 - i / 10} for i in range(1, 30)] + [{"step": 30, "loss": 5.0, "heldout_ppl": 150.0}]
    figs = [entropy_heatmap_figure(ent), entropy_heatmap_figure(ent, base), entropy_position_figure([base, ent], 256),
            needle_heatmap_figure(grid), training_curve_figure(history)]
    assert save_png(figs, tmp_path / "r.png", columns=3).stat().st_size > 30_000
    html = passkey_table([PasskeyResult("yarn", [256, 512], [1.0, 0.5], [{}] * 4, 1.0)])
    assert "<td>50%</td>" in html and "<td>2</td>" in html
