"""The explorer redraws its plots when a control moves, every plot from the one spec the sliders describe, and
explains bad input."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from widgets.frequency_explorer import FrequencyExplorer, knot_curve  # noqa: E402


def ys(explorer, figure, trace=1):
    return list(explorer.figures[figure].traces[trace]["y"])


def test_moving_sliders_redraws_every_plot():
    ex = FrequencyExplorer(method="yarn")
    outputs = {name: id(fig.widget) for name, fig in ex.figures.items()}
    before = {name: fig.traces for name, fig in ex.figures.items()}
    assert all(before.values())  # every plot is drawn from the start, none is an empty frame
    ex.target.value = 65536
    after = {name: fig.traces for name, fig in ex.figures.items()}
    assert {name: id(fig.widget) for name, fig in ex.figures.items()} == outputs  # the same output areas
    for name in ("wavelength", "factors", "ood", "attention"):
        assert before[name] != after[name], name
    assert ex.spec.target_length == 65536 and ex.updates == 1


def test_method_choice_shows_its_parameters():
    ex = FrequencyExplorer(method="yarn")
    assert ex.widget is not None  # builds the layout
    assert ex.controls["beta_fast"].layout.display is None and ex.controls["n_hat"].layout.display == "none"
    ex.method.value = "longrope"
    assert ex.controls["beta_fast"].layout.display == "none" and ex.controls["n_hat"].layout.display is None
    assert ex.spec.method == "longrope"
    ex.method.value = "longrope2"
    assert ex.controls["critical_dim"].layout.display is None and ex.spec.critical_dim == ex.controls["critical_dim"].value


def test_shaping_the_curve_changes_the_longrope_factors():
    ex = FrequencyExplorer(method="longrope")
    old = ex.spec.long_factor
    ex.knots[2].value = ex.knots[2].max  # push the middle up: the curve stays monotone
    new = ex.spec.long_factor
    assert new != old and all(b >= a for a, b in zip(new, new[1:], strict=False))
    assert ys(ex, "factors", trace=len(ex.figures["factors"].traces) - 1) == pytest.approx(list(new), abs=1e-4)


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


def test_the_loaded_line_states_the_rotary_layout():
    from transformers import CONFIG_MAPPING

    ex = FrequencyExplorer(method="yarn")
    ex.load_config(CONFIG_MAPPING["gpt_neox"](rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                               "partial_rotary_factor": 0.25}).to_dict())
    assert "rotary: 24 (12 frequency pairs), of 96 per head (partial rotary: 0.25), paired as halves" in ex.status.value
    ex.config_path.value = ""
    gemma = CONFIG_MAPPING["gemma3_text"]().to_dict()
    ex.load_config(gemma)  # per layer type: the full-attention layers' RoPE is the one explored
    assert ex.spec.rope_theta == 1e6 and "sliding_attention kept" in ex.status.value
    gemma["rope_parameters"] = {"main": {"rope_type": "default", "rope_theta": 1e4},
                                "compress": {"rope_type": "default", "rope_theta": 1.6e5}}
    with pytest.raises(Exception, match="its own RoPE"):
        ex.load_config(gemma)


def test_n_hat_export_explains_limit():
    ex = FrequencyExplorer(method="longrope")
    ex.controls["n_hat"].value = 16
    assert "cannot keep the original rotation" in ex.export.value


def test_a_loaded_base_is_exact_and_survives_other_sliders():
    ex = FrequencyExplorer(method="yarn")
    ex.load_config({"model_type": "llama", "hidden_size": 576, "num_attention_heads": 9, "head_dim": 64,
                    "max_position_embeddings": 8192, "rope_theta": 100000.0})
    assert ex.spec.rope_theta == 100000.0 and ex.base_text.value == 100000.0
    ex.controls["beta_fast"].value = 40  # an unrelated slider: the base is not re-read from the log slider's grid
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


def annotations(explorer, figure):
    from widgets.display import PLOTLY_MIME

    return [a["text"] for a in explorer.figures[figure].bundle[PLOTLY_MIME]["layout"].get("annotations", [])]


def test_every_plot_shows_the_lengths_the_sliders_show_after_quick_moves():
    ex = FrequencyExplorer(original_max_position_embeddings=4096, target_length=16384, method="longrope",
                           measure_model=None)
    for L0, target in ((8192, 16384), (2048, 4096), (65536, 65536), (1024, 1 << 20), (4096, 8192)):
        ex.original.value = L0
        ex.target.value = target
        L0, target = ex.original.value, ex.target.value  # what the sliders show now
        assert (ex.spec.original_max_position_embeddings, ex.spec.target_length) == (L0, target)
        assert {f"L0 = {L0}", f"target = {target}"} <= set(annotations(ex, "wavelength"))
        assert f"s = {target / L0:g}" in annotations(ex, "factors")
        assert f"L0 {L0} → {target} tokens" in ex.status.value
        assert max(ex.figures["ood"].traces[0]["x"]) <= target
        assert f'"factor": {target / L0}' in ex.export_json.value.replace(".0,", ",").replace(".0\n", "\n") or \
            f'"factor": {target / L0:g}' in ex.export_json.value


def test_the_out_of_distribution_scale_fits_the_data():
    ex = FrequencyExplorer(method="default", measure_model=None)
    heat = ex.figures["ood"].traces[0]
    values = [abs(v) for row in heat["z"] for v in row if v is not None]
    assert heat["zmax"] == pytest.approx(max(values), rel=1e-4) and heat["zmin"] == -heat["zmax"]
    assert heat["zmax"] != 4  # not the old fixed scale


def test_the_yarn_note_names_the_beta_fast_values_that_give_the_same_curve():
    import re

    ex = FrequencyExplorer(method="yarn", measure_model=None)
    ex.controls["beta_fast"].value = 32
    first, last, pair = (int(v) for v in re.search(r"β_fast (\d+)–(\d+) all give pair (\d+)", ex.note.value).groups())
    assert first <= 32 <= last
    curves = set()
    for beta in range(first, last + 1):
        ex.controls["beta_fast"].value = beta
        assert ex.spec.boundaries()[0] == pair
        curves.add(tuple(ex.figures["factors"].traces[-1]["y"]))
    assert len(curves) == 1  # the whole range draws one curve
    ex.controls["beta_fast"].value = last + 1
    assert ex.spec.boundaries()[0] == pair - 1 and f"pair {pair - 1}" in ex.note.value
    assert any("ramp from pair" in a for a in annotations(ex, "factors"))  # said on the plot too
    ex.method.value = "linear"
    assert ex.note.value == ""


def test_exported_rope_theta_is_the_loaded_one_after_an_unrelated_slider():
    import json

    ex = FrequencyExplorer(method="yarn", measure_model=None)
    ex.load_config("smollm2")
    theta = ex.spec.rope_theta
    ex.controls["beta_slow"].value = 2.0
    ex.target.value = ex.target.options[-1]
    assert json.loads(ex.export_json.value)["rope_parameters"]["rope_theta"] == theta == 100000.0
