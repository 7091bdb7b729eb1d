"""Every widget in a real JupyterLab, in a real browser, used as a person would: the notebook is opened and
run, a control is moved or pressed, and the test asserts on what the page then shows."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("playwright", reason="browser tests: make test-e2e installs playwright and chromium")

from .helpers import (  # noqa: E402
    button,
    choose,
    drawn,
    errors,
    graph,
    nudge_slider,
    open_and_run,
    plot_data,
    points,
    readout,
    set_readout,
    shoot,
    steady,
    type_into,
    wait_until,
)

pytestmark = pytest.mark.e2e


def test_frequency_explorer_follows_its_sliders(page, lab, shots):
    nb = lab.notebook("01_rope_frequencies", {"model": "tiny-random", "target_length": 512})
    area = open_and_run(page, lab.url, nb, ".widget-slider")
    waves = graph(area, "Wavelength")
    before = plot_data(waves)
    export = area.locator("code").first
    export_before = export.inner_text()
    assert readout(area, "target L") == "512"
    nudge_slider(area, "target L", "ArrowRight", 2)  # two lengths up: 2048
    assert readout(area, "target L") == "2048"
    expected = f'"factor": {2048 / int(readout(area, "L0"))}'
    wait_until(lambda: expected in export.inner_text(), 20, f"the exported rope_parameters to show {expected}")
    assert export.inner_text() != export_before and plot_data(waves) != before  # the plot was redrawn too
    factors = graph(area, "factor")
    curves = plot_data(factors)
    choose(area, "method", "linear")
    wait_until(lambda: plot_data(factors) != curves, 20, "the factor plot to redraw for another method")
    assert '"rope_type": "linear"' in export.inner_text()
    shoot(area, shots, "frequency_explorer")

    # the Measure button: perplexity and loss by position of a real (teaching) model under these settings
    choose(area, "model", "teaching-ci: smaller and weaker, shipped")
    button(area, "Measure").click()
    wait_until(lambda: "PPL" in area.locator(".widget-html", has_text="no scaling").first.inner_text()
               if area.locator(".widget-html", has_text="no scaling").count() else False, 300,
               "the Measure status line with the perplexity")

    def smoothed(traces):  # the smoothed curves (the raw ones are drawn faint)
        return [t for t in traces if "(raw)" not in t["name"]]

    traces = smoothed(drawn(area, "Loss by position", lambda d: [t["name"].split(" ")[0] for t in smoothed(d)]
                            == ["no", "linear"], "the no-scaling and linear loss curves"))
    assert len(traces) == 2 and traces[0]["name"].startswith("no scaling") and traces[1]["name"].startswith("linear")
    assert "<td>linear" in area.locator("table").last.inner_html() or "linear" in area.locator("table").last.inner_text()
    panel = area.locator(".widget-vbox", has=page.locator(".gtitle", has_text="Loss by position")).last
    shoot(panel, shots, "measure")
    assert not errors(page)


def test_entropy_explorer_computes_and_follows_the_temperature(page, lab, shots):
    nb = lab.notebook("03_attention_entropy", {"model": "teaching-ci", "length_multiple": 2, "queries_per_bucket": 8})
    area = open_and_run(page, lab.url, nb, "button:has-text('Compute')")
    status = area.locator(".widget-html", has_text="mean entropy").first
    button(area, "Compute").click()
    status.wait_for(timeout=300_000)
    curves = graph(area, "by query position")
    names = [t["name"] for t in drawn(area, "by query position", lambda d: any(t["name"].startswith("yarn") for t in d),
                                      "the yarn entropy curve")]
    assert any(n.startswith("no scaling") for n in names) and any(n.startswith("yarn") for n in names), names
    heat = drawn(area, "Entropy change vs no scaling", lambda d: any(t["type"] == "heatmap" for t in d), "the heatmap")
    z = [t for t in heat if t["type"] == "heatmap"]
    assert z and len(z[0]["z"]) >= 2  # layers x heads
    set_readout(area, "extra logits ×", 1.5)
    button(area, "Compute").click()
    wait_until(lambda: any("× 1.5" in t["name"] for t in plot_data(curves)), 300,
               "a curve for the logits x 1.5 temperature")
    shoot(area, shots, "entropy_explorer")
    assert not errors(page)


def test_eval_dashboard_runs_what_the_form_says(page, lab, shots):
    nb = lab.notebook("07_evaluation", {"model": "teaching-ci", "methods": ["default", "yarn"], "multiples": [1, 2],
                                        "n_documents": 2, "passkey_trials": 1, "needle_depths": [0.0, 1.0]})
    open_and_run(page, lab.url, nb, "button:has-text('Run')", timeout=600)
    dashboards = page.locator(".jp-OutputArea-output", has=page.locator("button", has_text="Run"))
    wait_until(lambda: dashboards.count() == 2, 120, "the results dashboard and the live dashboard")
    saved, live = dashboards.nth(0), dashboards.nth(1)
    assert points(saved, "Perplexity") >= 4  # the notebook's own results: 2 methods x 2 lengths
    type_into(live, "text", "lengths × L0", "1 4")
    set_readout(live, "documents", 1)
    set_readout(live, "passkey trials", 1)
    live.locator(".widget-select-multiple select").select_option(["default", "ntk"])
    button(live, "Run").click()
    live.locator(".widget-html", has_text="done in").first.wait_for(timeout=600_000)
    ppl = drawn(live, "Perplexity", lambda d: sorted(t["name"] for t in d if t["y"]) == ["default", "ntk"],
                "the perplexity of the two methods run")
    assert sorted(t["name"] for t in ppl if t["y"]) == ["default", "ntk"], [t["name"] for t in ppl]
    assert all(len(t["x"]) == 2 and max(t["x"]) == 4 * 256 for t in ppl if t["y"])  # lengths 1 x and 4 x L0
    assert "ntk" in live.locator("table").last.inner_text()  # the passkey table
    assert drawn(live, "eedle", lambda d: any(t["type"] == "heatmap" for t in d), "the needle heatmap")
    shoot(live, shots, "eval_dashboard")
    assert not errors(page)


def test_search_monitor_start_stop_resume(page, lab, shots):
    nb = lab.notebook("04_evolutionary_search", {"model": "teaching-ci", "multiple": 2, "budget": "tiny",
                                                 "n_documents": 2, "generations": 40, "report_documents": 2})
    area = open_and_run(page, lab.url, nb, "button:has-text('Resume')")  # the notebook presses Start itself
    title = "Fitness per generation"
    wait_until(lambda: points(area, title, "best") >= 3, 300, "three generations on the fitness plot")
    button(area, "Stop").click()
    status = area.locator(".widget-html", has_text="press Resume").first
    status.wait_for(timeout=120_000)
    # the status line and the figure are separate outputs; JupyterLab may draw the last figure a moment later
    stopped_at = steady(lambda: points(area, title, "best"), 3, 60, "the fitness plot after Stop")
    page.wait_for_timeout(4000)
    assert points(area, title, "best") == stopped_at, "the plot kept growing after Stop"
    assert area.locator("table").count() and "<td>" in area.locator("table").first.inner_html()  # parents table
    shoot(area, shots, "search_monitor")
    button(area, "Resume").click()
    wait_until(lambda: points(area, title, "best") > stopped_at, 300, "the resumed search to add generations")
    button(area, "Stop").click()
    status.wait_for(timeout=120_000)
    assert not errors(page)


def test_finetune_launcher_launch_stop_relaunch(page, lab, shots):
    tiny = {"population": 4, "parents": 2, "mutants": 1, "crossovers": 1, "generations": 1, "n_documents": 1}
    nb = lab.notebook("05_progressive_extension", {
        "model": "teaching-ci", "stage1_multiple": 2, "stage2_multiple": 2, "search1": tiny, "search2": tiny,
        "recovery": tiny, "train": {"steps": 40, "batch_size": 1, "checkpoint_every": 2, "warmup": 1},
        "eval_documents": 2})
    area = open_and_run(page, lab.url, nb, "button:has-text('Launch')")
    title = "Training loss"
    button(area, "Launch").click()
    wait_until(lambda: points(area, title) >= 3, 300, "three fine-tuning steps on the loss plot")
    button(area, "Stop").click()
    status = area.locator(".widget-html", has_text=re.compile(r"stopped after step \d+")).first
    status.wait_for(timeout=60_000)
    stopped_at = int(re.search(r"after step (\d+)", status.inner_text()).group(1))
    # the status line and the figure are separate outputs; JupyterLab may draw the last figure a moment later
    wait_until(lambda: points(area, title) == stopped_at, 30, f"the loss plot to show the {stopped_at} steps done")
    page.wait_for_timeout(3000)
    assert points(area, title) == stopped_at, "the loss plot kept growing after Stop"
    button(area, "Launch").click()  # resumes from the training checkpoint
    area.locator(".widget-html", has_text="done in").first.wait_for(timeout=600_000)
    assert points(area, title) == 40
    link = area.locator("a", has_text="executed.ipynb")
    assert link.count() == 1 and "Executing Cell" not in area.inner_text()  # papermill's chatter is filtered
    shoot(area, shots, "finetune_launcher")
    assert not errors(page)
    with page.context.expect_page() as opened:  # the link opens the executed notebook in JupyterLab, in a new tab
        link.click()
    tab = opened.value
    tab.locator(".lm-TabBar-tab .lm-TabBar-tabLabel", has_text="executed.ipynb").first.wait_for(timeout=60_000)
    tab.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    # the executed copy: papermill's injected parameters (live = False) are in it (Lab renders cells lazily,
    # so the report further down is not in the page until scrolled to)
    wait_until(lambda: "live = False" in tab.locator(".jp-Notebook").inner_text(), 30, "the injected parameters")
    tab.close()
