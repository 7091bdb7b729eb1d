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
from workbench.patch import NoRotaryError, patch

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
    for name in ("gemma3_text", "olmo3"):  # RoPE per layer type: full attention rescaled, sliding layers kept
        assert all(c.status == "exact" for c in matrix["built"][name]), name
    assert all(c.status == "refused" and "its own RoPE" in c.detail for c in matrix["built"]["deepseek_v4"])
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


def test_per_layer_type_rope_rescales_full_attention_and_keeps_sliding_layers():
    model = tiny_model("gemma3_text")
    assert set(model.config.layer_types) == {"sliding_attention", "full_attention"}
    sliding = copy.deepcopy(model.config.rope_parameters["sliding_attention"])
    spec = spec_for_model(model, "yarn", factor=4.0)
    assert spec.rope_theta == model.config.rope_parameters["full_attention"]["rope_theta"]  # the rescaled layers' θ
    full, notes = export_config(spec, model.config)
    assert full["rope_parameters"]["sliding_attention"] == sliding  # the same per-layer-type form, kept
    assert full["rope_parameters"]["full_attention"]["rope_type"] == "yarn"
    assert any("sliding_attention kept" in n for n in notes)
    ids = torch.arange(3, 200)[None]
    rotary = model.model.rotary_emb
    x = torch.zeros(1, ids.shape[1], 1)
    with torch.no_grad():
        before = rotary(x, ids, "sliding_attention")
        with patch(model, spec):
            after = model.model.rotary_emb(x, ids, "sliding_attention")
            assert not torch.equal(model.model.rotary_emb(x, ids, "full_attention")[0],
                                   rotary(x, ids, "full_attention")[0])
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    with pytest.raises(NotExpressibleError, match="only rope_parameters"):
        export_config(spec, model.config, "v4")


def test_per_layer_type_rope_the_workbench_cannot_split_is_refused():
    model = tiny_model("deepseek_v4")
    with pytest.raises(ConfigError, match="its own RoPE .*main.*compress.*rescales the full_attention layers"):
        spec_for_model(model, "yarn", factor=2.0)
    with pytest.raises(NotExpressibleError, match="its own RoPE"):
        export_config(spec_for_model(tiny_model("llama"), "yarn", factor=2.0), model.config)


def test_a_model_without_full_attention_layers_is_refused_by_name():
    from transformers import AutoModelForCausalLM

    config = tiny_model("gemma3_text").config
    config.layer_types = ["sliding_attention"] * config.num_hidden_layers
    model = AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(NoRotaryError, match="none of its layers is of type 'full_attention'"):
        patch(model, spec_for_model(model, "yarn", factor=2.0))


def test_config_helpers_leave_their_input_alone():
    model = tiny_model("phi3")
    cfg = model.config.to_dict()
    cfg["rope_parameters"] = {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8,
                              "original_max_position_embeddings": 64, "factor": 2.0, "rope_theta": 10000.0}
    before = copy.deepcopy(cfg)
    hf_config_from_dict(cfg)
    export_config(spec_for_model(model, "longrope", factor=2.0, long_factor=[2.0] * 8), cfg)
    assert cfg == before


def test_rerotation_turns_only_the_rescaled_layer_types_keys():
    """Sliding layers keep their RoPE, so a cache re-rotation at L0 leaves their keys as they were."""
    from transformers import DynamicCache

    model = tiny_model("gemma3_text")
    L0 = spec_for_model(model, "default").original_max_position_embeddings
    spec = spec_for_model(model, "longrope", target_length=4 * L0, long_factor=[3.0] * (model.config.head_dim // 2))
    ids = torch.arange(3, L0 + 4)[None]
    types = model.config.layer_types
    with torch.no_grad(), patch(model, spec, cache_policy="rerotate") as handle:
        cache = DynamicCache(config=model.config)
        model(ids[:, :L0], cache=cache, use_cache=True)  # short factors
        before = [layer.keys.clone() for layer in cache.layers]
        model(ids[:, L0:], cache=cache, use_cache=True)  # crosses L0: long factors, stored keys re-rotated
    assert handle.rerotations == 1
    assert model.config.sliding_window > ids.shape[1]  # the sliding layers' caches hold every key
    assert set(types) == {"sliding_attention", "full_attention"}
    for i, kind in enumerate(types):
        stored = cache.layers[i].keys[..., :L0, :]
        assert torch.equal(stored, before[i]) == (kind == "sliding_attention"), kind
