from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from widgets.entropy_explorer import EntropyExplorer  # noqa: E402


def test_compute_draws_curves_for_each_setting_and_the_layer_head_map():
    ex = EntropyExplorer(model="teaching-ci", length_multiple=4, method="yarn")
    ex.temperature.value = 1.5
    job = ex.compute(wait=True)
    assert job.error is None, job.error
    labels = [t["name"] for t in ex.curves.traces]
    assert labels == ["no scaling", "yarn", "yarn, logits × 1.5", "yarn without attention factor",
                      "uniform over the prefix"]
    assert ex.results[1].length == 1024 and "mean entropy" in ex.status.value
    z = ex.heatmap.traces[0]["z"]
    assert len(z) == 2 and len(z[0]) == 2  # teaching-ci: 2 layers x 2 heads
    by = {r.label: sum(r.by_position()) for r in ex.results}
    assert by["yarn, logits × 1.5"] < by["yarn"] < by["yarn without attention factor"]


def test_stop():
    ex = EntropyExplorer(model="teaching-ci", length_multiple=16, method="ntk")
    job = ex.compute()
    job.stop()
    job.join(60)
    assert job.cancelled and ex.status.value == "stopped"
