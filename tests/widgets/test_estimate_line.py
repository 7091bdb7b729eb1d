"""The estimate beside each panel's button: memory (and time once rates are known), and a refusal in red."""

from __future__ import annotations

import pytest

import widgets.estimate_line as line_module
from widgets.entropy_explorer import EntropyExplorer
from widgets.eval_dashboard import EvalDashboard


def test_the_dashboard_shows_what_run_would_cost_and_follows_its_controls():
    dash = EvalDashboard(model="teaching-ci", multiples=(1, 2))
    first = dash.estimate.widget.value
    assert "GB peak (fp32)" in first and "color:#555" in first
    dash.multiples.value = "1 2 64"
    assert dash.estimate.widget.value != first
    assert dash.estimate.estimate().longest == 64 * line_module.original_length("teaching-ci")


def test_a_job_that_cannot_fit_is_red_and_its_button_refuses_it(monkeypatch):
    monkeypatch.setattr(line_module, "available_bytes", lambda: 1e6)  # a machine with 1 MB free
    dash = EvalDashboard(model="teaching-ci", multiples=(1,))
    assert "color:#b2182b" in dash.estimate.widget.value and "refused before loading anything" in \
        dash.estimate.widget.value
    assert dash.run() is None and "GB available" in dash.status.value and not dash.running
    assert "--force" not in dash.estimate.widget.value  # the command line's way out, which a panel has not
    ex = EntropyExplorer(model="teaching-ci")
    assert ex.compute() is None and "refused" in ex.status.value


@pytest.mark.parametrize("model", ["teaching", "smollm2"])
def test_time_appears_once_this_machines_rates_are_known(model, monkeypatch):
    from workbench.estimate import Rates

    monkeypatch.setattr(line_module, "cached_rates", lambda shape, dtype: None)
    dash = EvalDashboard(model=model, multiples=(1,))
    assert "measured here at the first run" in dash.estimate.widget.value
    monkeypatch.setattr(line_module, "cached_rates", lambda shape, dtype: Rates(1e10, 1e10, "measured"))
    dash.estimate.refresh()
    assert "in all (" in dash.estimate.widget.value and "first run" not in dash.estimate.widget.value


def test_the_launcher_shows_the_fine_tune_it_would_start_and_refuses_one_that_cannot_fit(tmp_path, monkeypatch):
    from widgets.launcher import FinetuneLauncher
    from workbench.demo import NOTEBOOKS

    ui = FinetuneLauncher(NOTEBOOKS / "05_progressive_extension.ipynb", output=str(tmp_path / "o.ipynb"))
    est = ui.estimate.estimate()
    L1 = 4 * line_module.original_length("teaching")
    assert est.forwards == ((L1, 120),) and est.batch == 4 and est.engine == "train"  # the stage-1 fine-tune
    ui.fields["train"].value = '{"batch_size": 2, "gradient_checkpointing": true}'
    est = ui.estimate.estimate()
    assert est.batch == 2 and est.engine == "train-checkpointed" and "GB peak" in ui.estimate.widget.value
    ui.fields["stage1_multiple"].value = "four"
    assert ui.estimate.widget.value == ""  # nothing to estimate until the field parses
    ui.fields["stage1_multiple"].value = "4"
    monkeypatch.setattr(line_module, "available_bytes", lambda: 1e6)
    assert ui.launch() is None and "refused before loading anything" in ui.status.value and ui.job is None
