"""The Measure button: a real perplexity measurement in the background, drawn beside the baseline; Stop works."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from widgets.frequency_explorer import FrequencyExplorer  # noqa: E402
from widgets.measure import resample, translate  # noqa: E402


def names(panel):
    """The legend's curves (each also drawn raw and faint, without a legend entry)."""
    return [t["name"].split(" (")[0] for t in panel.figure.traces if t.get("showlegend") is not False]


def test_measure_draws_baseline_and_setting(teaching_ci):
    ex = FrequencyExplorer.from_model(teaching_ci.model, target_length=1024, method="yarn", measure_model="teaching-ci")
    panel = ex.measure
    panel.n_documents.value = 2
    assert not panel.figure.traces and "press Measure" in panel.figure.bundle["text/plain"]  # says why it is empty
    job = panel.measure(wait=True)
    assert job.error is None and not job.cancelled
    assert names(panel) == ["no scaling", "yarn s=4"]
    assert "PPL" in panel.status.value and panel.progress.value == 1
    yarn = panel.results[-1]
    assert yarn.length == 1024 and yarn.n_documents == 2 and yarn.ppl > 1
    ex.method.value = "linear"  # a second setting reuses the cached baseline
    panel.measure(wait=True)
    assert names(panel) == ["no scaling", "yarn s=4", "linear s=4"]
    assert "<td>linear s=4</td>" in panel.table.value and "<th>seconds</th>" in panel.table.value
    colors = {t["name"].split(" (")[0]: t["line"]["color"] for t in panel.figure.traces}
    assert len(set(colors.values())) == 3, colors  # the baseline, yarn and linear each in their own colour


def test_stop_cancels_a_running_measurement(teaching_ci):
    ex = FrequencyExplorer.from_model(teaching_ci.model, target_length=2048, method="ntk", measure_model="teaching-ci")
    job = ex.measure.measure()
    ex.measure.stop()
    job.join(60)
    assert job.cancelled and ex.measure.status.value == "stopped" and not ex.measure.button.disabled


def test_translate_to_another_geometry(teaching_ci):
    ex = FrequencyExplorer(method="longrope", measure_model=None)  # SmolLM2-like geometry, s = 2
    spec, note = translate(ex.spec, teaching_ci.model)
    assert spec.original_max_position_embeddings == 256 and spec.factor == 2.0 and spec.rope_theta == 500.0
    assert "resampled" in note
    assert resample((1.0, 2.0, 3.0), 5) == (1.0, 1.5, 2.0, 2.5, 3.0)
