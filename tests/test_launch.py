"""The launcher: bad input, and a real headless launch of a notebook that streams its run's events."""

from __future__ import annotations

import json

import pytest

from workbench.demo import NOTEBOOKS
from workbench.launch import Launch, LaunchError, declared_parameters, launch


def test_declared_parameters_and_bad_input(tmp_path):
    params = declared_parameters(NOTEBOOKS / "05_progressive_extension.ipynb")
    assert {"model", "stage1_multiple", "train", "output_dir", "live"} <= set(params)
    with pytest.raises(LaunchError, match="does not exist"):
        declared_parameters(tmp_path / "missing.ipynb")
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    plain = tmp_path / "plain.ipynb"
    nbformat.write(nb, plain)
    with pytest.raises(LaunchError, match="has no cell tagged 'parameters'"):
        declared_parameters(plain)
    with pytest.raises(LaunchError, match=r"parameter\(s\) \['stepz'\] are not declared by 05_progressive"):
        Launch(NOTEBOOKS / "05_progressive_extension.ipynb", {"stepz": 3}, tmp_path / "o.ipynb")
    with pytest.raises(LaunchError, match=r"stage1_multiple must be int \(like 4\), got 'four'; train must be dict"):
        Launch(NOTEBOOKS / "05_progressive_extension.ipynb", {"stage1_multiple": "four", "train": [1]}, tmp_path / "o")
    with pytest.raises(LaunchError, match="eval_documents must be int"):
        Launch(NOTEBOOKS / "05_progressive_extension.ipynb", {"eval_documents": True}, tmp_path / "o.ipynb")
    Launch(NOTEBOOKS / "07_evaluation.ipynb", {"multiples": [1, 2], "n_documents": 2}, tmp_path / "o.ipynb")  # fine
    with pytest.raises(LaunchError, match="processes=0 is not allowed"):
        Launch(NOTEBOOKS / "05_progressive_extension.ipynb", {}, tmp_path / "o.ipynb", processes=0)


def test_launch_runs_a_notebook_and_streams_events(tmp_path):
    lines = []
    result = launch(NOTEBOOKS / "06_short_context_recovery.ipynb",
                    {"model": "teaching-ci", "population": 4, "generations": 1, "n_documents": 2, "eval_documents": 2},
                    tmp_path / "06.ipynb", log=lines.append)
    assert result.ok, result.log_tail
    assert "CPU process" in lines[0] and (tmp_path / "06.ipynb").exists()
    assert any("generation   0/" in line and ": best PPL" in line for line in lines), lines  # its progress, as it ran
    results = json.loads((tmp_path / "06" / "results.json").read_text())
    assert set(results["ppl_at_L0"]) == {"original", "before recovery", "after recovery",  # short_context_report's
                                        "long factors everywhere"}
