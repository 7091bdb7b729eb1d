from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from widgets.eval_dashboard import EvalDashboard  # noqa: E402


def test_run_fills_every_view_and_reloads_from_a_run_folder(tmp_path):
    dash = EvalDashboard(model="teaching-ci", methods=("default", "yarn"), multiples=(1, 2), n_documents=2,
                         passkey_trials=1)
    dash.needle_method.value = "yarn"
    job = dash.run(wait=True)
    assert job.error is None, job.error
    assert {t["name"] for t in dash.ppl_fig.traces} == {"default", "yarn"}
    assert len(dash.ppl_fig.traces[0]["x"]) == 2  # two lengths
    assert "<td>yarn</td>" in dash.passkey_html.value
    assert len(dash.needle_fig.traces[0]["z"]) == 5
    from workbench.runs import RunFolder

    run = RunFolder(tmp_path)
    run.write("ppl", dash.ppl)
    run.write("passkey", dash.passkey)
    run.write("needle_grid", dash.needles)
    again = EvalDashboard.from_run(tmp_path, original_length=256)
    assert {t["name"] for t in again.ppl_fig.traces} == {"default", "yarn"} and "<td>default</td>" in again.passkey_html.value
    assert again.needle_fig.traces and again.loss_fig.traces


def test_bad_lengths_text():
    dash = EvalDashboard(model="teaching-ci")
    dash.multiples.value = "one two"
    assert dash.run() is None and "whole numbers" in dash.status.value
