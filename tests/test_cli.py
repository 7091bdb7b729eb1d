from __future__ import annotations

import json

import pytest

from workbench.cli import main


def test_rope_show_table_and_json(capsys):
    args = ["rope", "show", "--head-dim", "64", "--rope-theta", "100000", "--original", "8192", "--target", "16384"]
    assert main(args + ["--method", "yarn"]) == 0
    out = capsys.readouterr().out
    assert "critical dim" in out and "YaRN ramp pairs 10..20" in out
    assert main(args + ["--method", "linear", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["pairs"]) == 32 and data["pairs"][0]["effective_factor"] == 2.0


def test_rope_export_writes_a_loadable_config(tmp_path, capsys):
    factors = tmp_path / "f.json"
    factors.write_text(json.dumps({"long_factor": [1.0] * 12 + [1.0 + 0.1 * i for i in range(20)]}))
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"model_type": "llama", "hidden_size": 576, "num_attention_heads": 9, "head_dim": 64,
                                "max_position_embeddings": 8192, "rope_theta": 100000.0}))
    out = tmp_path / "config.json"
    assert main(["rope", "export", "--config", str(base), "--method", "longrope", "--target", "16384",
                 "--factors", str(factors), "--out", str(out)]) == 0
    cfg = json.loads(out.read_text())
    assert cfg["rope_parameters"]["rope_type"] == "longrope" and cfg["max_position_embeddings"] == 16384
    assert "rope_theta" not in cfg  # v5 keeps it inside rope_parameters
    from workbench.hf import hf_config_from_dict

    assert hf_config_from_dict(cfg).rope_parameters["long_factor"][-1] == pytest.approx(2.9)


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    assert main(["doctor", str(bad)]) == 2
    assert "is not a JSON config file" in capsys.readouterr().err
    assert main(["rope", "show", "--method", "yarn", "--head-dim", "64", "--rope-theta", "1e4", "--original", "4096",
                 "--target", "1024"]) == 2
    assert "target_length=1024 is not allowed" in capsys.readouterr().err
    assert main(["rope", "show", "--method", "yarn", "--target", "1024"]) == 2
    assert "give --model/--config" in capsys.readouterr().err


def test_doctor_exit_code_reflects_errors(tmp_path, capsys):
    cfg = {"model_type": "phi3", "hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 8192,
           "rope_parameters": {"rope_type": "longrope", "short_factor": [1.0] * 32, "long_factor": [2.0] * 30,
                               "original_max_position_embeddings": 4096, "rope_theta": 10000.0}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    assert main(["doctor", str(path)]) == 1
    assert "long_factor has 30 values" in capsys.readouterr().out


def test_demo_quick_writes_notebooks_figures_and_summary(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "01_rope_frequencies.ipynb").exists() and (tmp_path / "02_interpolation_methods.ipynb").exists()
    summary = (tmp_path / "summary.md").read_text()
    assert "| longrope |" in summary and "perplexity.png" in summary
    assert "attention entropy beyond L0" in summary and "entropy.png" in summary  # the evaluation table


def test_export_save_model_loads_in_stock_transformers(tmp_path, capsys):
    """The shipped folder: stock transformers loads it and matches the patched model."""
    import torch
    from transformers import AutoModelForCausalLM

    from workbench.hf import spec_for_model
    from workbench.models import load_model
    from workbench.patch import patch

    folder = tmp_path / "tiny-yarn"
    assert main(["rope", "export", "--model", "tiny-random", "--method", "yarn", "--target", "512",
                 "--save-model", str(folder)]) == 0
    stock = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert stock.config.rope_parameters["rope_type"] == "yarn"
    lm = load_model("tiny-random")
    ids = torch.randint(0, 1000, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), patch(lm.model, spec_for_model(lm.model, "yarn", target_length=512)):
        expected = lm.model(ids).logits
    with torch.no_grad():
        assert torch.allclose(stock(ids).logits, expected, atol=1e-5)
