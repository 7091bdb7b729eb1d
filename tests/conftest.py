"""Shared set-up: a cache folder of the test session's own, tiny random models of each family, the teaching model.

Tests never write into the user's cache: ``WORKBENCH_CACHE`` points at a folder made for the session, seeded
with the user's already-built entries (the converted SmolLM2, the teaching tokenizer, tokenised corpora, a
trained CI teaching model) so that nothing is converted or trained again. SmolLM2's 0.5 GB of weights are
hard links (the cache never writes a file in place: entries are replaced whole); the rest is copied. A fresh
clone has nothing to seed, and the session builds what it needs into its own folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEEDED = ("smollm2-135m-instruct-fp32", "teaching-tokenizer-", "tokens", "teaching-ci-")
LINKED = ("smollm2-135m-instruct-fp32",)  # too large to copy


def _copy_entry(source: Path, target: Path) -> None:
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link if source.name in LINKED else shutil.copy2)


def _session_cache() -> tuple[Path, float]:
    """A new cache folder seeded from the user's cache; returns it and the seconds seeding took."""
    from workbench.cache import CACHE_ENV, cache_dir

    t0 = time.time()
    user = cache_dir(create=False)
    session = Path(tempfile.mkdtemp(prefix="workbench-test-cache-"))
    for entry in sorted(user.iterdir()) if user.is_dir() else []:
        if not entry.name.startswith(".") and entry.is_dir() and entry.name.startswith(SEEDED):
            _copy_entry(entry, session / entry.name)
    os.environ[CACHE_ENV] = str(session)
    return session, time.time() - t0


def pytest_configure(config):
    config._workbench_cache, config._workbench_cache_seconds = _session_cache()


def pytest_unconfigure(config):
    if hasattr(config, "_workbench_cache"):
        shutil.rmtree(config._workbench_cache, ignore_errors=True)


def pytest_report_header(config):
    return (f"workbench cache for this session: {config._workbench_cache} (seeded from the user's cache in "
            f"{config._workbench_cache_seconds:.1f} s)")


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
