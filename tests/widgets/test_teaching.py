"""The teaching figures draw data (no empty frames), say the right pair numbers, and render to PNG; the notebooks'
automatic ``live`` is off under headless runners."""

from __future__ import annotations

from widgets.figures import method_specs
from widgets.session import front_end_attached, resolve_live, runner_command
from widgets.teaching import (
    attention_sink_figure,
    entropy_growth_figure,
    logit_decay_figure,
    logit_extrapolation_figures,
    pair_circle_figures,
    teaching_pairs,
)
from workbench.rope import make_spec
from workbench.static import save_png

SPEC = make_spec("default", head_dim=64, rope_theta=500.0, original_max_position_embeddings=256, factor=8.0)


def test_every_teaching_figure_has_data_and_renders(tmp_path):
    assert teaching_pairs(SPEC) == [0, 19, 20, 31]
    circles = pair_circle_figures(SPEC)
    assert [f.layout.title.text.split(":")[0] for f in circles] == ["pair 0", "pair 19", "pair 20", "pair 31"]
    assert [len(f.data) for f in circles] == [2, 2, 3, 3]  # circle + trained arc, + new arc for the slow pairs
    figs = [*circles, logit_decay_figure(SPEC),
            *logit_extrapolation_figures(method_specs(SPEC, ["default", "linear", "ntk", "yarn"])),
            entropy_growth_figure(SPEC, {"no attention factor": 1.0, "yarn": 1.2}),
            attention_sink_figure([0.3, 0.1, 0.05], "toy")]
    for f in figs:
        assert f.data and all(len(t.y) > 0 for t in f.data), f.layout.title.text
    assert save_png(figs, tmp_path / "all.png").stat().st_size > 20_000


def test_live_is_automatic_off_under_headless_runners(tmp_path):
    assert resolve_live(True) is True and resolve_live(False) is False
    assert runner_command(1) != "" or runner_command(1) == ""  # readable or not, never raises
    # pytest is not a headless notebook runner: this process's parent decides, like a kernel's would
    assert front_end_attached() == (not any(n in runner_command() for n in ("papermill", "nbconvert", "nbclient",
                                                                             "jupyter-execute", "nbmake")))



def test_a_pair_circle_is_drawn_square_not_on_a_wide_axis():
    from widgets.teaching import pair_circle_figure
    from workbench.rope import make_spec

    spec = make_spec("default", head_dim=64, rope_theta=1e5, original_max_position_embeddings=8192)
    lay = pair_circle_figure(spec, 20, seq_len=32768).layout
    assert lay.yaxis.scaleanchor == "x" and lay.xaxis.constrain == lay.yaxis.constrain == "domain"
    assert tuple(lay.xaxis.range) == tuple(lay.yaxis.range) == (-1.3, 1.3)
