"""Every RoPE architecture of the installed transformers, discovered from its auto mapping: patched and exported
exactly, or refused by the workbench with the reason; never silently wrong. Also writes the README's table."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch

from workbench.architectures import check_architectures, markdown, tiny_model
from workbench.hf import (
    ConfigError,
    NotExpressibleError,
    export_config,
    hf_config_from_dict,
    spec_for_model,
)
from workbench.patch import patch

README = Path(__file__).parents[1] / "README.md"


@pytest.fixture(scope="module")
def matrix():
    return check_architectures()


def test_every_discovered_architecture_is_exact_or_refused_with_a_reason(matrix):
    cases = [c for cases in matrix["built"].values() for c in cases]
    failures = [f"{c.model_type}/{c.method}: {c.status} {c.detail}" for c in cases if not c.ok]
    assert not failures, "\n".join(failures)
    assert len(matrix["built"]) >= 50  # the discovery found the families, not a handful
    for name in ("llama", "gpt_neox", "phi", "stablelm", "persimmon", "cohere", "cohere2", "glm"):  # the hard layouts
        assert all(c.status == "exact" for c in matrix["built"][name]), name
    assert all(c.status == "refused" and "its own RoPE" in c.detail for c in matrix["built"]["gemma3_text"])
    phi3 = {c.method: c for c in matrix["built"]["phi3"]}
    assert phi3["longrope"].status == phi3["default"].status == "exact"
    assert phi3["yarn"].status == "refused" and "use --method longrope" in phi3["yarn"].detail


def test_the_readme_table_is_the_one_this_transformers_gives(matrix):
    table = markdown(matrix)
    text = README.read_text()
    found = re.search(r"<!-- architectures:begin -->\n(.*?)<!-- architectures:end -->", text, re.S)
    assert found, "README has no architectures table"
    assert found.group(1) == table, "README's architecture table is stale: run `workbench architectures --markdown`" \
                                    " and paste it between the markers"


def test_partial_rotary_fraction_survives_the_export():
    model = tiny_model("gpt_neox")
    assert model.config.rope_parameters["partial_rotary_factor"] == 0.25
    spec = spec_for_model(model, "longrope", target_length=256, long_factor=[1.0, 3.0])
    full, _ = export_config(spec, model.config)
    assert full["rope_parameters"]["partial_rotary_factor"] == 0.25 and full["rope_parameters"]["rope_type"] == "longrope"
    ids = torch.arange(3, 103)[None]
    with torch.no_grad(), patch(model, spec):
        got = model(ids).logits
    from transformers import AutoModelForCausalLM

    stock = AutoModelForCausalLM.from_config(hf_config_from_dict(full), attn_implementation="sdpa").eval()
    stock.load_state_dict({k: v for k, v in model.state_dict().items() if "rotary" not in k}, strict=False)
    with torch.no_grad():
        assert (stock(ids).logits - got).abs().max() <= 1e-5


def test_interleaved_pairs_default_changes_nothing():
    model = tiny_model("cohere")
    ids = torch.arange(3, 60)[None]
    with torch.no_grad():
        before = model(ids).logits
        with patch(model, spec_for_model(model, "default")):
            after = model(ids).logits
    assert torch.equal(before, after)


def test_per_layer_type_rope_is_refused_in_export_and_geometry():
    model = tiny_model("gemma3_text")
    with pytest.raises(ConfigError, match="gives each layer type its own RoPE .*sliding_attention.*full_attention"):
        spec_for_model(model, "yarn", factor=2.0)
    with pytest.raises(NotExpressibleError, match="its own RoPE"):
        export_config(spec_for_model(tiny_model("llama"), "yarn", factor=2.0), model.config)


def test_config_helpers_leave_their_input_alone():
    model = tiny_model("phi3")
    cfg = model.config.to_dict()
    cfg["rope_parameters"] = {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8,
                              "original_max_position_embeddings": 64, "factor": 2.0, "rope_theta": 10000.0}
    before = copy.deepcopy(cfg)
    hf_config_from_dict(cfg)
    export_config(spec_for_model(model, "longrope", factor=2.0, long_factor=[2.0] * 8), cfg)
    assert cfg == before
