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
from workbench.rope import available_methods, make_spec  # noqa: E402
from workbench.static import save_png  # noqa: E402

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


def test_overlapping_methods_are_told_apart():
    from widgets.figures import style_of
    from workbench.rope import available_methods, get_method

    specs = method_specs(GEOMETRY, ["default", "linear", "ntk", "yarn", "llama3", "longrope"])
    fig = factor_figure(specs, "longrope")
    looks = {(t.line.dash, t.line.width, t.mode, t.marker.symbol if t.marker else None) for t in fig.data}
    declared = [get_method(m).spec_cls.look for m in available_methods()]
    assert len(looks) == len(specs) and len(set(declared)) == len(declared)  # every method looks its own
    assert len({look.color for look in declared}) == len(declared)
    assert fig.data[-1].name == "longrope" and fig.data[-1].line.width == 4  # the chosen method on top
    assert fig.layout.shapes[0].layer == "below"  # the s line under PI's λ = s
    assert style_of("no scaling (PPL 3)")["line"]["color"] != style_of("linear s=4")["line"]["color"]


def test_heldout_figure_plots_the_paired_difference():
    from widgets.figures import heldout_figure
    from workbench.search import HeldoutReport

    report = HeldoutReport(2048, "longrope", {"searched": {"ppl": 20.0, "per_document_ppl": [10.0, 20.0, 30.0]},
                                              "yarn": {"ppl": 21.0, "per_document_ppl": [11.0, 19.0, 33.0]}},
                           documents=["a", "b", "c"], source_documents=["a"], wins={"yarn": 2 / 3},
                           gain={"yarn": 1 / 21})
    assert HeldoutReport.from_dict(report.to_dict()) == report  # its JSON round trip
    assert report.figures()[0].to_dict() == heldout_figure(report.to_dict()).to_dict()  # from the object or its JSON
    fig = heldout_figure(report)
    bars = [t for t in fig.data if t.type == "bar"][0]
    assert list(bars.y) == [-3.0, -1.0, 1.0] and list(bars.x) == ["c", "a", "b"]
    assert "67%" in fig.layout.title.text


def test_titles_do_not_repeat_the_length():
    import torch

    from widgets.figures import entropy_heatmap_figure
    from workbench.entropy import EntropyResult

    ent = EntropyResult("no scaling @ 1024", 1024, [0, 1], 2, 64, torch.rand(2, 2, 8).tolist(),
                        torch.rand(2, 2, 8).tolist(), [64] * 8)
    assert "@ 1024 @ 1024" not in entropy_heatmap_figure(ent).layout.title.text
