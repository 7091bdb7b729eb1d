"""Factor sets shipped with the package: they load, fit their model, and refuse the wrong one clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.factors import FactorSetError, load_factor_set, shipped_factor_sets
from workbench.hf import spec_for_model
from workbench.models import load_model_config
from workbench.rope import LongRopeSpec
from workbench.search.standing import read_standing

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, model", [("smollm2-16k", "smollm2"), ("smollm2-32k", "smollm2"), ("teaching-8x", "teaching")])
def test_shipped_sets_load_and_fit_their_model(name, model):
    fs = load_factor_set(name)
    assert name in shipped_factor_sets() and fs.model == model and isinstance(fs.spec, LongRopeSpec)
    geometry = spec_for_model(load_model_config(model), "default")
    assert fs.fitted_to(geometry) is fs
    # the factors are exactly the best of the search they name: a shipped run folder, or a benchmark's record
    p = fs.provenance
    if "run_folder" in p:
        standing = read_standing(ROOT / p["run_folder"])
        assert p["finished"] and standing.finished and p["evaluations"] == standing.evaluations
        best = list(standing.best_spec().long_factor)
    else:
        assert p["benchmark"].startswith("tests/benchmarks/results/")
        bench = json.loads((ROOT / p["benchmark"].split(" ")[0]).read_text())
        best = bench["best_factors"] if "best_factors" in bench else bench["runs"]["plain"]["best_factors"]
    assert list(fs.spec.long_factor) == best


def test_a_set_for_another_model_is_refused_with_the_field_that_differs():
    geometry = spec_for_model(load_model_config("teaching"), "default")
    with pytest.raises(FactorSetError, match="was made for rope_theta=100000, this model has 500: it fits smollm2"):
        load_factor_set("smollm2-16k").fitted_to(geometry)


def test_unknown_or_malformed_sets_are_named(tmp_path):
    with pytest.raises(FactorSetError, match=r"neither a shipped one \(smollm2-16k, smollm2-32k, teaching-8x\)"):
        load_factor_set("nope")
    bad = tmp_path / "f.json"
    bad.write_text("[1, 2]")
    with pytest.raises(FactorSetError, match="is not a factor set: it needs a 'spec' object"):
        load_factor_set(bad)
    bad.write_text(json.dumps({"spec": {"method": "longrope", "head_dim": 64}}))
    with pytest.raises(FactorSetError, match="its spec is not valid"):
        load_factor_set(bad)
    bad.write_text("{")
    with pytest.raises(FactorSetError, match="is not readable JSON"):
        load_factor_set(bad)
