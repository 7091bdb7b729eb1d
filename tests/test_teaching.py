"""The teaching model: deterministic training, recorded curve, degradation beyond L0, cache layout."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from safetensors.torch import load_file

from workbench.teaching import (
    PRESETS,
    TeachingError,
    load_teaching,
    train_teaching_model,
    training_info,
)


def test_training_is_deterministic_for_a_seed(tmp_path):
    cfg = replace(PRESETS["ci"], steps=4, warmup=2, preset="ci-test")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    info_a = train_teaching_model(cfg, a, progress=False)
    train_teaching_model(cfg, b, progress=False)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    other = tmp_path / "c"
    other.mkdir()
    train_teaching_model(replace(cfg, seed=1), other, progress=False)
    assert any((wa[k] != load_file(other / "model.safetensors")[k]).any() for k in wa)
    assert [h["step"] for h in info_a["history"]] == [1, 2, 3, 4] and "heldout_ppl" in info_a["history"][-1]
    assert json.loads((a / "training.json").read_text())["config"]["seed"] == 0


def test_ci_preset_is_cached_and_described():
    lm = load_teaching("ci")
    info = training_info("ci")
    assert info["parameters"] == sum(p.numel() for p in lm.model.parameters())
    assert lm.model.config.max_position_embeddings == 256 and len(lm.tokenizer) == 4096
    # it learned something (a uniform guess over 4,096 tokens is PPL 4096); its wall time is a benchmark figure
    # (README), not asserted here: a cache trained on a busy machine would fail a timing check forever
    assert info["seconds"] > 0 and info["heldout_ppl_at_L0"] < 1000


def test_unknown_preset():
    with pytest.raises(TeachingError, match="preset='huge' is not allowed"):
        load_teaching("huge")
