"""Shared fixtures: tiny random models of each supported family, seeded."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_addoption(parser):
    parser.addoption("--run-bench", action="store_true", help="run the benchmarks (make bench)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-bench"):
        return
    skip = pytest.mark.skip(reason="benchmark: run with make bench")
    for item in items:
        if "benchmarks" in str(item.fspath):
            item.add_marker(skip)


def _tiny(family: str, max_position_embeddings: int = 64, rope_theta: float = 1000.0, **extra):
    from transformers import (
        AutoModelForCausalLM,
        LlamaConfig,
        MistralConfig,
        Phi3Config,
        Qwen2Config,
    )

    common = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_position_embeddings,
                  rope_theta=rope_theta, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "phi3": Phi3Config}[family]
    if family == "phi3":
        common.update(original_max_position_embeddings=max_position_embeddings)
    common.update(extra)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cls(**common), attn_implementation="sdpa").eval()


@pytest.fixture(scope="session")
def tiny_model_factory():
    return _tiny


@pytest.fixture()
def tiny_llama():
    return _tiny("llama")


@pytest.fixture(scope="session")
def teaching_ci():
    """The shipped CI teaching model, loaded once per session: for tests that read it (patching and undoing a
    spec is fine); a test that trains or edits weights loads its own copy with ``load_model("teaching-ci")``."""
    from workbench.models import load_model

    return load_model("teaching-ci")
