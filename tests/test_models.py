from __future__ import annotations

import json

import pytest
import torch

from workbench.cache import atomic_dir
from workbench.models import ModelError, attention_implementation, load_model


def test_tiny_random_model_loads_with_smollm2_tokenizer():
    lm = load_model("tiny-random")
    assert lm.model.config.vocab_size == len(lm.tokenizer)
    assert lm.original_max_position_embeddings == 128


def test_smollm2_loads_from_cache_with_its_rope_geometry():
    from workbench.hf import model_geometry

    lm = load_model("smollm2")
    g = model_geometry(lm.model)
    assert (g.head_dim, g.rope_theta, g.original_max_position_embeddings) == (64, 100000.0, 8192)
    assert lm.model.config._attn_implementation == "sdpa"


def test_missing_or_non_rope_model_paths(tmp_path):
    with pytest.raises(ModelError, match="is not a known name or an existing folder; give 'teaching', 'teaching-ci'"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="has no config.json"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 64}))
    with pytest.raises(ModelError, match="not a RoPE model"):
        load_model(str(tmp_path))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without a GPU")
def test_flash_attention_falls_back_or_refuses():
    assert attention_implementation("auto") == "sdpa"  # no GPU/flash-attn here
    with pytest.raises(ModelError, match="flash-attn or a GPU is missing"):
        attention_implementation("flash_attention_2")


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "entry"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("interrupted")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "whole.bin").write_bytes(b"y")
    assert (final / "whole.bin").read_bytes() == b"y"


@pytest.mark.parametrize("name, theta, L0", [("teaching", 500.0, 256), ("teaching-ci", 500.0, 256),
                                              ("smollm2", 100000.0, 8192), ("tiny-random", 10000.0, 128)])
def test_a_models_config_is_read_without_its_weights(monkeypatch, name, theta, L0):
    import transformers

    from workbench.hf import model_geometry
    from workbench.models import load_model_config

    def refuse(*a, **k):
        raise AssertionError("weights were loaded to read a config")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", refuse)
    g = model_geometry(load_model_config(name))
    assert (g.rope_theta, g.original_max_position_embeddings) == (theta, L0)


def test_an_unknown_model_config_lists_what_is_accepted(tmp_path):
    from workbench.models import load_model_config

    with pytest.raises(ModelError, match="does not exist; give 'teaching', 'teaching-ci', 'smollm2', 'tiny-random'"):
        load_model_config(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "rope_theta": 10000.0,
                                                      "max_position_embeddings": 512, "hidden_size": 64,
                                                      "num_attention_heads": 4}))
    assert load_model_config(str(tmp_path))["max_position_embeddings"] == 512

