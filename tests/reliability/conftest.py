"""Shared by the reliability tests: the smallest real search, run once per module on the teaching-ci model."""

from __future__ import annotations

import pytest

from workbench.search import SearchConfig, run_search

TINY_SEARCH = dict(target_length=512, population=4, parents=2, mutants=1, crossovers=1, generations=1, n_documents=1,
                   n_hat_stage=False)


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory, teaching_ci):
    """A run folder holding a finished tiny search (copy it before changing it)."""
    lm = teaching_ci
    folder = tmp_path_factory.mktemp("search") / "run"
    run_search(lm.model, lm.tokenizer, SearchConfig(**TINY_SEARCH), folder, report=False)
    return folder
