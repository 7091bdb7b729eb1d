"""The explorer updates its plots in place when a control moves, and explains bad input."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from widgets.frequency_explorer import FrequencyExplorer, knot_curve  # noqa: E402


def ys(explorer, figure, trace=1):
    return list(explorer.figures[figure].data[trace].y)


def test_moving_sliders_updates_every_plot_in_place():
    ex = FrequencyExplorer(method="yarn")
    widgets = {name: id(fig) for name, fig in ex.figures.items()}
    before = {name: fig.to_plotly_json()["data"] for name, fig in ex.figures.items()}
    ex.target.value = 65536
    after = {name: fig.to_plotly_json()["data"] for name, fig in ex.figures.items()}
    assert {name: id(fig) for name, fig in ex.figures.items()} == widgets  # same FigureWidgets, updated
    for name in ("wavelength", "factors", "ood", "attention"):
        assert before[name] != after[name], name
    assert ex.spec.target_length == 65536 and ex.updates == 1


def test_method_choice_shows_its_parameters():
    ex = FrequencyExplorer(method="yarn")
    assert ex.widget is not None  # builds the layout
    assert ex.beta_fast.layout.display is None and ex.n_hat.layout.display == "none"
    ex.method.value = "longrope"
    assert ex.beta_fast.layout.display == "none" and ex.n_hat.layout.display is None
    assert ex.spec.method == "longrope"
    ex.method.value = "longrope2"
    assert ex.critical.layout.display is None and ex.spec.critical_dim == ex.critical.value


def test_shaping_the_curve_changes_the_longrope_factors():
    ex = FrequencyExplorer(method="longrope")
    old = ex.spec.long_factor
    ex.knots[2].value = ex.knots[2].max  # push the middle up: the curve stays monotone
    new = ex.spec.long_factor
    assert new != old and all(b >= a for a, b in zip(new, new[1:], strict=False))
    assert ys(ex, "factors", trace=len(ex.figures["factors"].data) - 1) == pytest.approx(list(new), rel=1e-6)


def test_knot_curve_is_monotone_on_grid():
    curve = knot_curve([1.0, 3.0, 2.0, 2.5, 4.0], 32)
    assert curve[0] == 1.0 and curve[-1] == 4.0
    assert all(b >= a for a, b in zip(curve, curve[1:], strict=False))
    assert all(round(v, 2) == v for v in curve)


def test_target_never_below_L0():
    ex = FrequencyExplorer(original_max_position_embeddings=4096, target_length=16384)
    ex.original.value = 65536
    assert ex.target.value == 65536 and ex.spec.original_max_position_embeddings == 65536


def test_load_from_config_and_bad_config(tmp_path):
    ex = FrequencyExplorer(method="yarn")
    phi3 = {"model_type": "phi3", "hidden_size": 3072, "num_attention_heads": 32, "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096, "rope_theta": 10000.0,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 48,
                             "long_factor": [1.0 + 1.3 * i for i in range(48)]}}
    spec = ex.load_config(phi3)
    assert ex.head_dim.value == 96 and ex.method.value == "longrope" and ex.spec.long_factor == spec.long_factor
    assert "loaded" in ex.status.value and "longrope" in ex.export.value
    bad = tmp_path / "config.json"
    bad.write_text("{oops")
    ex.config_path.value = str(bad)
    ex.load_button.click()
    assert "not a JSON config file" in ex.status.value
    ex.config_path.value = ""
    ex.load_button.click()
    assert "type smollm2" in ex.status.value


def test_n_hat_export_explains_limit():
    ex = FrequencyExplorer(method="longrope")
    ex.n_hat.value = 16
    assert "cannot keep the original rotation" in ex.export.value


def test_a_loaded_base_is_exact_and_survives_other_sliders():
    ex = FrequencyExplorer(method="yarn")
    ex.load_config({"model_type": "llama", "hidden_size": 576, "num_attention_heads": 9, "head_dim": 64,
                    "max_position_embeddings": 8192, "rope_theta": 100000.0})
    assert ex.spec.rope_theta == 100000.0 and ex.base_text.value == 100000.0
    ex.beta_fast.value = 40  # an unrelated slider: the base is not re-read from the log slider's grid
    assert ex.spec.rope_theta == 100000.0 and '"rope_theta": 100000.0' in ex.export_json.value
    ex.base_text.value = 500.0  # typed: exactly 500, not the slider's 501.187
    assert ex.spec.rope_theta == 500.0
    ex.base_text.value = -3.0
    assert ex.spec.rope_theta == 500.0 and "must be a number above 1" in ex.status.value
    ex.base.value = 10000.0  # the slider still works, and the text box follows it
    assert ex.spec.rope_theta == pytest.approx(10000.0) and ex.base_text.value == pytest.approx(10000.0)


def test_the_knots_follow_the_scale_factor():
    ex = FrequencyExplorer(original_max_position_embeddings=4096, target_length=8192, method="longrope")
    assert max(ex.spec.long_factor) == pytest.approx(1.5 * 2, abs=0.01)  # the starting curve tops out at 1.5 s
    ex.target.value = 16384  # s = 4
    assert max(ex.spec.long_factor) == pytest.approx(1.5 * 4, abs=0.02)
    ex.target.value = 8192
    assert max(ex.spec.long_factor) == pytest.approx(1.5 * 2, abs=0.02)


def test_load_by_model_name_reset_and_the_full_json():
    import html
    import json

    ex = FrequencyExplorer(method="yarn", measure_model=None)
    ex.config_path.value = "teaching"
    ex.load_button.click()
    assert ex.spec.rope_theta == 500.0 and ex.spec.original_max_position_embeddings == 256
    ex.method.value = "linear"
    ex.base_text.value = 1234.5
    ex.reset_button.click()
    assert ex.spec.rope_theta == 500.0 and ex.method.value == "yarn"
    ex.method.value = "longrope"
    full = json.loads(ex.export_json.value)
    assert len(full["rope_parameters"]["long_factor"]) == 32 and full["max_position_embeddings"] == ex.target.value
    ex.config_path.value = "no-such-model"
    ex.load_button.click()
    assert "give 'teaching', 'teaching-ci', 'smollm2'" in html.unescape(ex.status.value)
