"""Notebook 08 (deploy to llama.cpp) runs headless on tiny parameters: a search run folder in, a GGUF and both
engines' loss curves out. Without llama-cpp-python it still writes the GGUF and says how to install the engine."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from workbench import llamacpp
from workbench.demo import NOTEBOOKS, execute
from workbench.gguf import gguf_spec, read_gguf
from workbench.launch import declared_parameters
from workbench.rope import make_spec

SHIPPED = Path(__file__).parents[1] / "benchmarks/results/search_smollm2_16k_cpu.json"


def test_deploy_notebook_parameters_cell():
    path = NOTEBOOKS / "08_deploy.ipynb"
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "live: bool" in tagged[0].source and "output_dir: str" in tagged[0].source
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert set(declared_parameters(path)) == {"model", "search_run", "factor_set", "length", "n_documents",
                                              "compare_default", "live", "output_dir"}


def test_deploy_notebook_runs_headless(tmp_path):
    factors = json.loads(SHIPPED.read_text())["best_factors"]
    spec = make_spec("longrope", head_dim=64, rope_theta=100000.0, original_max_position_embeddings=8192,
                     target_length=16384, long_factor=factors)
    search = tmp_path / "search"
    search.mkdir()
    (search / "result.json").write_text(json.dumps({"spec": spec.to_dict()}))
    execute("08_deploy", {"search_run": str(search), "length": 512, "n_documents": 1}, tmp_path, log=False)
    out = tmp_path / "08_deploy"
    results = json.loads((out / "results.json").read_text())
    assert results["figures"] == ["loss_by_position.png"]
    assert (out / "loss_by_position.png").stat().st_size > 10_000
    gguf = Path(results["gguf"])
    assert gguf.parent == out and gguf_spec(gguf) == spec
    assert read_gguf(gguf).rope_freqs == pytest.approx(factors)  # float32 copies
    assert set(results["ppl"]) == {"default", "longrope"}
    assert all(row["transformers"] > 1 for row in results["ppl"].values())
    if llamacpp.available():
        assert results["llama_cpp"] == "ran"
        # 512 tokens, one document: the two engines agree to within the Q4_1 arithmetic (tests/test_llamacpp.py)
        assert all(abs(row["relative_difference"]) < 0.02 for row in results["ppl"].values())
    else:
        assert results["llama_cpp"].startswith("llama-cpp-python is not installed")
