"""transformers interop: export, import (both layouts, Phi-3 style), doctor, and logits parity."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench.cli import main as cli_main
from workbench.doctor import doctor
from workbench.hf import (
    ConfigError,
    NotExpressibleError,
    export_config,
    hf_config_from_dict,
    spec_for_model,
    spec_from_hf,
    to_hf,
)
from workbench.models import load_model_config
from workbench.patch import patch
from workbench.rope import ramp_factors

FAMILIES = ["llama", "mistral", "qwen2", "phi3"]


def method_params(method, D=8):
    if method == "longrope":
        return dict(long_factor=ramp_factors(D, 2, D - 1, 1.0, 5.0),
                    short_factor=[1.0, 1.0, 1.0, 1.05, 1.1, 1.1, 1.2, 1.3])
    if method == "llama3":
        return dict(low_freq_factor=1.0, high_freq_factor=4.0)
    return {}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["default", "linear", "ntk", "dynamic", "yarn", "llama3", "longrope"])
def test_stock_model_from_exported_config_matches_patched_model(tiny_model_factory, family, method):
    model = tiny_model_factory(family)
    spec = spec_for_model(model, method, target_length=256, **method_params(method))
    if family == "phi3" and method in ("linear", "dynamic", "yarn", "llama3"):
        # transformers' Phi3Config accepts only rope_type default/longrope: the export is refused, naming them;
        # our patch still works there
        with pytest.raises(NotExpressibleError, match=r"phi3's config class refuses it .*: stock transformers would "
                                                      r"not compute this .* it keeps default, longrope: use --method "
                                                      r"longrope"):
            export_config(spec, model.config)
        with torch.no_grad(), patch(model, spec):
            assert torch.isfinite(model(torch.arange(3, 103)[None]).logits).all()
        return
    full, _ = export_config(spec, model.config)
    ids = torch.randint(3, 128, (2, 200), generator=torch.Generator().manual_seed(1))
    for n in (40, 200):  # below and above L0 = 64
        fresh = AutoModelForCausalLM.from_config(hf_config_from_dict(full), attn_implementation="sdpa").eval()
        fresh.load_state_dict(model.state_dict())  # dynamic NTK in transformers is stateful: fresh model per length
        with torch.no_grad():
            expected = fresh(ids[:, :n]).logits
            with patch(model, spec):
                got = model(ids[:, :n]).logits
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), (family, method, n)


@pytest.mark.parametrize("layout", ["v5", "v4"])
@pytest.mark.parametrize("method", ["default", "linear", "dynamic", "yarn", "llama3", "longrope"])
def test_export_import_round_trip(tiny_model_factory, layout, method):
    model = tiny_model_factory("llama")
    spec = spec_for_model(model, method, target_length=256, **method_params(method))
    full, _ = export_config(spec, model.config, layout)
    back = spec_from_hf(full)
    assert back.method == spec.method
    f, g = spec.frequencies(), back.frequencies()
    assert torch.equal(f.inv_freq, g.inv_freq) and f.attention_factor == g.attention_factor
    if layout == "v4":
        assert "rope_parameters" not in full and "rope_theta" in full
    else:
        assert "rope_scaling" not in full and full["rope_parameters"]["rope_theta"] == spec.rope_theta


def test_import_phi3_style_config_with_short_and_long_factors():
    D = 48
    cfg = {
        "model_type": "phi3", "hidden_size": 3072, "num_attention_heads": 32, "num_hidden_layers": 32,
        "max_position_embeddings": 131072, "original_max_position_embeddings": 4096, "rope_theta": 10000.0,
        "rope_scaling": {"type": "longrope", "short_factor": [1.0 + 0.01 * i for i in range(D)],
                         "long_factor": [1.0 + 1.3 * i for i in range(D)]},
    }
    spec = spec_from_hf(cfg)
    assert spec.method == "longrope" and spec.head_dim == 96
    assert spec.original_max_position_embeddings == 4096 and spec.factor == 32.0
    assert spec.short_factor[1] == 1.01 and spec.long_factor[2] == pytest.approx(3.6)
    assert spec.uses_long(4097) and not spec.uses_long(4096)
    report = doctor(cfg)
    assert any("also applied to inputs <= L0=4096" in f.message for f in report.findings)
    assert any(f.level == "note" and "legacy" in f.message for f in report.findings)


def test_n_hat_export_explains_it_cannot_be_expressed(tiny_model_factory):
    model = tiny_model_factory("llama")
    spec = spec_for_model(model, "longrope", target_length=256, n_hat=4, **method_params("longrope"))
    with pytest.raises(NotExpressibleError, match="n_hat=4: stock transformers cannot keep the original rotation"):
        to_hf(spec)
    lossy = to_hf(spec, allow_lossy=True)
    assert any("dropped" in n for n in lossy.notes)


def test_dynamic_yarn_not_expressible(tiny_model_factory):
    spec = spec_for_model(tiny_model_factory("llama"), "yarn", target_length=256, dynamic=True)
    with pytest.raises(NotExpressibleError, match="dynamic YaRN"):
        to_hf(spec)


def test_doctor_flags_inconsistencies(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 32768,
           "rope_parameters": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
                               "rope_theta": 10000.0},
           "rope_theta": 50000.0}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    report = doctor(str(path))
    messages = " | ".join(f.message for f in report.findings)
    assert "factor=4 but max_position_embeddings / original_max_position_embeddings = 32768/4096 = 8" in messages
    assert "top-level rope_theta=50000.0 differs" in messages
    assert report.vllm and '"rope_type": "yarn"' in report.vllm
    assert "--rope-scaling yarn --rope-scale 4 --yarn-orig-ctx 4096" in report.llama_cpp
    text = str(report)
    assert "YaRN" in text and "critical pair" in text


def test_doctor_flags_wrong_factor_list_length():
    cfg = {"model_type": "phi3", "hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 8192,
           "rope_parameters": {"rope_type": "longrope", "short_factor": [1.0] * 32, "long_factor": [2.0] * 30,
                               "original_max_position_embeddings": 4096, "rope_theta": 10000.0}}
    report = doctor(cfg)
    assert not report.ok
    assert any("long_factor has 30 values" in f.message for f in report.findings)


def test_config_not_json(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="is not a JSON config file"):
        doctor(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        spec_from_hf(str(tmp_path / "missing.json"))


def test_non_rope_config():
    with pytest.raises(ConfigError, match="not a RoPE model"):
        spec_from_hf({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_positions": 1024})


def test_doctor_states_the_rotary_layout():
    from transformers import CONFIG_MAPPING

    neox = CONFIG_MAPPING["gpt_neox"](rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                        "partial_rotary_factor": 0.25}).to_dict()
    assert "of 96 per head (partial rotary: 0.25)" in doctor(neox).numbers["head_dim (rotary)"]
    assert doctor(neox).numbers["rotary pairing"].startswith("halves")
    assert doctor(CONFIG_MAPPING["cohere"]().to_dict()).numbers["rotary pairing"].startswith("interleaved")
    gemma = doctor(CONFIG_MAPPING["gemma3_text"]().to_dict())
    assert gemma.numbers["rope_theta"].startswith("1e+06 (from rope_parameters.full_attention")
    assert "per layer type: full_attention rescaled, sliding_attention kept" in gemma.numbers["layout"]
    assert any(f.level == "note" and "sliding_attention kept (default, θ 10000" in f.message for f in gemma.findings)
    assert not any(f.level == "error" for f in gemma.findings)
    split = CONFIG_MAPPING["gemma3_text"]().to_dict()
    split["rope_parameters"] = {"main": {"rope_type": "default", "rope_theta": 1e4},
                                "compress": {"rope_type": "default", "rope_theta": 1.6e5}}
    refused = doctor(split)
    assert refused.summary == "RoPE per layer type the workbench cannot split (not supported)"
    assert any(f.level == "error" and "main: default" in f.message for f in refused.findings)


def _longrope_config(short: float, long: float) -> dict:
    cfg = copy.deepcopy(load_model_config("smollm2"))
    cfg["rope_parameters"] = {"rope_type": "longrope", "rope_theta": 100000.0, "factor": 2.0,
                              "original_max_position_embeddings": 8192, "short_factor": [short] * 32,
                              "long_factor": [long] * 32}
    cfg["max_position_embeddings"] = 16384
    return cfg


def test_doctor_refuses_factors_no_model_could_read(tmp_path):
    fast = doctor(_longrope_config(0.001, 1.0))  # every pair 1000x faster than trained, inside L0
    assert not fast.ok
    assert any(f.level == "error" and "32 of 32 pairs turn faster than trained within L0 (factor as low as 0.001)"
               in f.message and "cannot read positions it was trained on" in f.message for f in fast.findings)
    collapsed = doctor(_longrope_config(1.0, 500.0))  # every position on a few angles at s = 2
    assert not collapsed.ok
    assert any(f.level == "error" and f.message.startswith("positions collapse at L = 16384") for f in collapsed.findings)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_longrope_config(1.0, 500.0)))
    assert cli_main(["doctor", str(path)]) == 1


def test_doctor_warns_of_slow_faster_and_unordered_factors_it_can_still_read():
    cfg = _longrope_config(1.0, 2.0)
    cfg["rope_parameters"]["long_factor"] = [1.0] * 16 + [0.8] + [6.0] * 15  # one pair a bit fast, others beyond 2s
    report = doctor(cfg)
    assert report.ok, report.findings
    assert any(f.level == "warning" and f.message.startswith("1 of 32 pairs turn faster than trained at L = 16384")
               for f in report.findings)
    assert any(f.level == "warning" and "beyond 2s" in f.message for f in report.findings)
    assert any(f.level == "warning" and "long_factor decreases at 1 pair(s) (first: pair 16" in f.message
               for f in report.findings)


@pytest.mark.parametrize("name", ["smollm2-16k", "smollm2-32k", "teaching-8x"])
def test_doctor_passes_every_shipped_factor_set(name):
    from workbench.factors import load_factor_set

    fs = load_factor_set(name)
    full, _ = export_config(fs.spec, load_model_config(fs.model), allow_lossy=True)
    report = doctor(full)
    assert report.ok and not [f for f in report.findings if "pairs turn faster" in f.message or "collapse" in
                              f.message or "decreases" in f.message], report.findings
