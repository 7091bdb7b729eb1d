"""The SmolLM2 results shipped with the package (``make demo-full``'s table and curves): they load with their
provenance, and a demo-full output folder turns into the same file."""

from __future__ import annotations

import json

import pytest

from workbench.demo import RESULTS, provenance_now, shipped_results, write_shipped_results


def test_shipped_smollm2_results_load_with_provenance():
    r = shipped_results("smollm2")
    assert r.original_max_position_embeddings == 8192 and r.lengths == [8192, 16384]
    assert {x.label for x in r.longest()} == {"default", "linear", "ntk", "yarn", "longrope"}
    for key in ("commit", "machine", "date", "command"):
        assert r.provenance[key] and r.provenance[key] != "unknown", key
    assert "measured on" in r.caption() and r.provenance["commit"][:7] in r.caption()
    table = r.table()
    assert "| default | 25.71 | 58.16 |" in table and "attention entropy beyond L0" in table
    assert r.entropy_beyond_L0()["default"] == pytest.approx(3.807, abs=5e-4)  # the README's full table
    with pytest.raises(FileNotFoundError, match="shipped: smollm2"):
        shipped_results("nope")


def test_a_notebook_02_folder_becomes_the_same_results_file(tmp_path):
    shipped = json.loads((RESULTS / "smollm2.json").read_text())
    run = tmp_path / "02_interpolation_methods"
    run.mkdir()
    (run / "ppl.json").write_text(json.dumps(shipped["ppl"]))
    (run / "entropy.json").write_text(json.dumps(shipped["entropy"]))
    (run / "results.json").write_text(json.dumps({
        "model": shipped["model"], "corpus": shipped["corpus"], "documents": shipped["documents"],
        "dtype": shipped["dtype"], "L0": shipped["original_max_position_embeddings"], "lengths": shipped["lengths"]}))
    provenance = provenance_now("make demo-full")
    assert set(provenance) >= {"commit", "machine", "date", "command"} and provenance["machine"]
    path = write_shipped_results(run, provenance, "again", folder=tmp_path)
    again = shipped_results("again", folder=tmp_path)
    assert path.exists() and again.table() == shipped_results("smollm2").table()
    assert again.provenance["command"] == "make demo-full"
