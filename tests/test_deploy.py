"""Which spec notebook 08 deploys, and the engine comparison it presents (the engines themselves are tested in
test_llamacpp.py and by the notebook's own test)."""

from __future__ import annotations

import json

import pytest

from workbench.deploy import EngineComparison, deploy_spec
from workbench.evaluate import PerplexityResult
from workbench.factors import FactorSetError, load_factor_set
from workbench.models import smollm2_gguf_path
from workbench.rope import make_spec


def test_a_search_result_is_deployed_when_there_is_one(tmp_path):
    spec = make_spec("yarn", head_dim=64, rope_theta=100000.0, original_max_position_embeddings=8192,
                     target_length=32768)
    (tmp_path / "result.json").write_text(json.dumps({"spec": spec.to_dict()}))
    got, origin = deploy_spec(tmp_path, smollm2_gguf_path())
    assert got == spec and str(tmp_path) in origin


def test_without_a_search_result_the_factor_set_is_deployed_if_it_fits(tmp_path):
    got, origin = deploy_spec(tmp_path / "none", smollm2_gguf_path(), "smollm2-16k")
    assert got == load_factor_set("smollm2-16k").spec and "smollm2-16k" in origin
    other = load_factor_set("teaching-8x")
    (tmp_path / "teaching.json").write_text(json.dumps(other.to_dict()))
    with pytest.raises(FactorSetError, match="was made for"):
        deploy_spec(tmp_path / "none", smollm2_gguf_path(), str(tmp_path / "teaching.json"))


def _result(label: str, ppl: float, seconds: float) -> PerplexityResult:
    return PerplexityResult(label=label, length=512, mode="window", n_documents=1, nll=0.0, ppl=ppl,
                            per_document_ppl=[ppl], documents=["doc"], concatenated=[False], bucket_size=128,
                            per_position_nll=[3.0, 3.1, 3.2, 3.3], seconds=seconds, tokens_forwarded=512,
                            dtype="fp32")


def _comparison(with_llama_cpp: bool) -> EngineComparison:
    out = EngineComparison("src.gguf", "out.gguf", 10, {"llama.context_length": 16384}, [1.0, 2.0], {"method": "x"},
                           512, 8192, ["doc"], "ran" if with_llama_cpp else "not installed")
    for name, ppl in (("default", 20.0), ("longrope", 18.0)):
        out.results[name] = {"transformers": _result(f"{name} · transformers", ppl, 2.0)}
        if with_llama_cpp:
            out.results[name]["llama.cpp"] = _result(f"{name} · llama.cpp", ppl * 1.01, 3.0)
    return out


def test_the_comparison_presents_itself_and_round_trips():
    both = _comparison(True)
    assert both.ratio("longrope") == pytest.approx(1.01)
    d = both.to_dict()
    assert d["ppl"]["longrope"] == pytest.approx({"transformers": 18.0, "transformers_seconds": 2.0,
                                                  "llama.cpp": 18.18, "llama.cpp_seconds": 3.0,
                                                  "relative_difference": 0.01})
    again = EngineComparison.from_dict(json.loads(json.dumps(d)))
    assert again.to_dict() == d and again.summary() == both.summary()
    assert "llama.cpp / transformers = 1.0100" in both.summary()
    assert "| longrope | 18.000 | 18.180 | 1.0100 | 2, 3 |" in both.markdown()
    assert len(both.figures()[0].data) == 8  # four curves, each raw and smoothed


def test_without_llama_cpp_the_comparison_says_so():
    one = _comparison(False)
    assert one.ratio("default") is None and "relative_difference" not in one.to_dict()["ppl"]["default"]
    assert "not run" in one.markdown() and "llama.cpp" not in one.summary().split(":", 1)[1]
