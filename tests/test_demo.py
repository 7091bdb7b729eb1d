"""The demo's plan: every step names a notebook parameter that exists, with a value of the declared type,
and the five-minute demo reads SmolLM2 beyond L0 with the unscaled model, YaRN and searched factors."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.demo import DEMO, DEMO_LENGTH, FULL, NOTEBOOKS, QUICK
from workbench.factors import load_factor_set
from workbench.launch import declared_parameters
from workbench.models import load_model_config


@pytest.mark.parametrize("step", DEMO + FULL + QUICK, ids=lambda s: s.run)
def test_every_step_sets_parameters_its_notebook_declares(step):
    declared = declared_parameters(NOTEBOOKS / f"{step.notebook}.ipynb")
    assert set(step.params) <= set(declared), set(step.params) - set(declared)


def test_the_quick_demo_reads_smollm2_beyond_L0_with_searched_factors():
    smollm2 = next(s for s in DEMO if s.params.get("model") == "smollm2" and "lengths" in s.params)
    L0 = load_model_config("smollm2")["max_position_embeddings"]
    assert smollm2.params["lengths"] == [DEMO_LENGTH] and DEMO_LENGTH > L0
    assert {"default", "yarn", "longrope"} <= set(smollm2.params["methods"])
    factors = load_factor_set(smollm2.params["longrope_factors"])
    assert factors.model == "smollm2" and factors.spec.original_max_position_embeddings == L0
    assert len({s.run for s in DEMO}) == len(DEMO)  # each step its own output folder


def test_the_summary_page_shows_the_recorded_real_model_search():
    from workbench.demo import summary_page

    page = summary_page(Path("/nonexistent"), [], {}, 1.0, "quick")
    assert "## Recorded, not measured by this run: the smollm2 search to 32,768 tokens" in page
    assert "| YaRN seed |" in page and "| smollm2-ramp-9.6-31-to-5 seed |" in page and "| best (generation 11) |" in page
    assert "held-out: searched 17.013, PI 119.269, NTK 18.398, YaRN 18.495" in page and "| bible: 05-Deuteronomy |" in page  # its held-out report
