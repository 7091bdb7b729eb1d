"""Every notebook runs headless under papermill on tiny parameters and writes its results.json."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from workbench.demo import NOTEBOOKS, execute
from workbench.launch import declared_parameters

TINY = {
    "01_rope_frequencies": {"model": "tiny-random", "target_length": 512},
    "03_attention_entropy": {"model": "teaching-ci", "length_multiple": 2, "queries_per_bucket": 8},
    "04_evolutionary_search": {"model": "teaching-ci", "multiple": 2, "budget": "tiny", "n_documents": 2,
                               "report_documents": 3},
    "07_evaluation": {"model": "teaching-ci", "methods": ["default", "yarn"], "multiples": [1, 2], "n_documents": 2,
                      "passkey_trials": 1, "needle_depths": [0.0, 1.0]},
    "02_interpolation_methods": {"model": "tiny-random", "lengths": [128, 256], "methods": ["default", "yarn", "longrope"],
                                 "measure": True},
    "05_progressive_extension": {
        "model": "teaching-ci", "stage1_multiple": 2, "stage2_multiple": 2,
        "search1": {"population": 4, "parents": 2, "mutants": 1, "crossovers": 1, "generations": 1, "n_documents": 1},
        "train": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "warmup": 1},
        "search2": {"population": 4, "parents": 2, "mutants": 1, "crossovers": 1, "generations": 1, "n_documents": 1},
        "recovery": {"population": 4, "parents": 2, "mutants": 1, "crossovers": 1, "generations": 1, "n_documents": 1},
        "eval_documents": 2},
    "06_short_context_recovery": {"model": "teaching-ci", "population": 4, "generations": 1, "n_documents": 2,
                                  "eval_documents": 2},
}


# notebooks whose headless run needs its own set-up, in a test file of their own
OWN_TEST = {"08_deploy": "tests/notebooks/test_deploy_notebook.py"}


def test_every_notebook_has_a_typed_parameters_cell_and_no_outputs():
    names = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert sorted(set(names) - set(OWN_TEST)) == sorted(TINY), "add tiny parameters for every notebook"
    for name in names:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        src = tagged[0].source
        assert "live: bool" in src and "output_dir: str" in src, name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} has outputs committed"
        # papermill must understand every declared line (it silently drops one whose comment holds "=")
        declared = [re.match(r"(\w+)", line).group(1) for line in src.splitlines() if re.match(r"\w+\s*:", line)]
        assert sorted(declared_parameters(NOTEBOOKS / f"{name}.ipynb")) == sorted(declared), name


@pytest.mark.parametrize("name", sorted(TINY))
def test_notebook_runs_headless(name, tmp_path):
    execute(name, TINY[name], tmp_path, log=False)
    results = json.loads((tmp_path / name / "results.json").read_text())
    assert results["figures"], "no figures written"
    for fig in results["figures"]:
        assert (tmp_path / name / fig).stat().st_size > 10_000
    if name == "02_interpolation_methods":
        assert set(results["ppl"]) == {"default", "yarn", "longrope"}
        assert all(v > 1 for per_len in results["ppl"].values() for v in per_len.values())
        assert "not_expressible" not in json.dumps(results["rope_parameters"])
        assert set(results["entropy_beyond_L0"]) == {"default", "yarn", "yarn without attention factor (same inputs)"}
        table = (tmp_path / name / "evaluation_table.md").read_text()
        assert "| yarn |" in table and "attention entropy beyond L0" in table
    if name == "01_rope_frequencies":
        assert results["pairs_out_of_distribution_at_target"] > 0
    if name == "03_attention_entropy":
        assert set(results["mean_entropy"]) == {"no scaling @ L0 (256)", "no scaling @ 512", "yarn",
                                                "yarn without attention factor"}
    if name == "04_evolutionary_search":
        assert results["evaluations"] > 6 and results["report"]["settings"].keys() == {"searched", "linear", "ntk", "yarn"}
        assert (tmp_path / name / "journal-0.jsonl").exists() and len(results["best_factors"]) == 32
        # run again on the same folder: it resumes (never deletes the journal) and ends with the same winner
        again = execute(name, TINY[name], tmp_path, log=False)
        assert "resuming the search" in again.read_text()
        assert json.loads((tmp_path / name / "results.json").read_text())["best_factors"] == results["best_factors"]
    if name == "06_short_context_recovery":  # run again: the finished search is read back, not repeated
        first = (tmp_path / f"{name}.ipynb").read_text()
        again = execute(name, TINY[name], tmp_path, log=False).read_text()
        assert "generation " in first and "generation " not in again  # ConsoleSink prints a line per generation
        assert json.loads((tmp_path / name / "results.json").read_text())["short_factor"] == results["short_factor"]
        assert set(results["ppl_beyond_L0"]) == {"before recovery", "after recovery"}  # 2 L0, via the report
    if name == "07_evaluation":
        assert set(results["ppl"]) == {"default", "yarn"} and results["needle_accuracy"] is not None
        assert set(results["short_context_change"]) == {"yarn"}
        for f in ("ppl.json", "passkey.json", "needle_grid.json", "needle_ppl.json", "params.json"):
            assert (tmp_path / name / f).exists(), f


def test_every_notebook_has_a_classroom_preset_it_documents():
    from workbench.demo import CLASSROOM, papermill_arguments

    names = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert sorted(CLASSROOM) == names
    for name, params in CLASSROOM.items():
        declared = declared_parameters(NOTEBOOKS / f"{name}.ipynb")
        assert set(params) <= set(declared), (name, set(params) - set(declared))
        intro = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells[0].source
        assert "**Classroom preset**" in intro, name
        for key, value in params.items():  # the first Markdown cell names every key and plain value of the preset
            assert key in intro, (name, key)
            if not isinstance(value, dict):
                shown = json.dumps(value) if isinstance(value, list) else str(value).lower() if isinstance(
                    value, bool) else str(value)
                assert shown in intro.replace("False", "false"), (name, key, shown)
    args = papermill_arguments({"lengths": [256, 512], "model": "teaching", "flag": False})
    assert args == ["-y", "lengths: [256, 512]", "-p", "model", "teaching", "-y", "flag: false"]


def test_the_search_notebook_replays_the_shipped_smollm2_search_without_computing(tmp_path, monkeypatch):
    """replay="smollm2-32k": the shipped 4x search's standing and figures, from its folder alone."""
    from workbench.search.standing import read_standing

    execute("04_evolutionary_search", {"replay": "smollm2-32k"}, tmp_path, log=False)
    results = json.loads((tmp_path / "04_evolutionary_search" / "results.json").read_text())
    assert results["model"] == "smollm2" and results["target_length"] == 32768 and results["evaluations"] >= 22
    assert len(results["best_factors"]) == 32 and results["generations"][0]["generation"] == 0
    assert results["figures"] == ["search.png"]
    assert results["evaluations"] <= read_standing("smollm2-32k").evaluations  # the search may go on meanwhile
    assert not (tmp_path / "04_evolutionary_search" / "journal-0.jsonl").exists()  # nothing was searched here
