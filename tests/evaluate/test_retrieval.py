"""Passkey, needle builders and scores, needle-driven perplexity, short-context regression."""

from __future__ import annotations

import json
import math

import pytest
import torch

from workbench.data import DataError, needle_sample, needle_samples, passkey_prompt, passkey_prompts
from workbench.evaluate import (
    needle_grid,
    needle_perplexity,
    passkey_accuracy,
    retrieval,
    short_context_regression,
    token_nll,
    write_results,
)
from workbench.models import load_model


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random")


def test_passkey_prompt_has_exact_length_and_the_key_at_its_depth(tiny):
    tok = tiny.tokenizer
    p = passkey_prompt(tok, 400, 0.25, 31337)
    assert p.tokens.shape == (400,)
    text = tok.decode(p.tokens)
    assert text.startswith("There is an important info") and text.endswith("What is the pass key? The pass key is")
    assert text.count("31337") == 2
    assert 0.15 < text.index("31337") / len(text) < 0.35
    keys = [q.passkey for q in passkey_prompts(tok, 300, 20, seed=1)]
    assert all(1 <= k <= 50000 for k in keys) and len(set(keys)) > 15
    assert [q.passkey for q in passkey_prompts(tok, 300, 20, seed=1)] == keys  # seeded


def test_passkey_errors(tiny):
    with pytest.raises(DataError, match="length=40 is not allowed: too short to hold the passkey prompt"):
        passkey_prompt(tiny.tokenizer, 40, 0.5, 7)
    with pytest.raises(DataError, match="depth=1.5"):
        passkey_prompt(tiny.tokenizer, 400, 1.5, 7)


def test_passkey_scoring_counts_only_the_right_key(tiny, monkeypatch):
    prompts = {}

    def oracle(model, tokens, max_new_tokens):  # answers the key found in the prompt, once right, once wrong
        text = tiny.tokenizer.decode(tokens)
        key = int(text.split("The pass key is ")[1].split(".")[0])
        prompts[key] = prompts.get(key, 0) + 1
        answer = key if len(prompts) % 2 else key + 1
        return torch.tensor(tiny.tokenizer(f" {answer}. ", add_special_tokens=False)["input_ids"])

    monkeypatch.setattr(retrieval, "_greedy", oracle)
    result = passkey_accuracy(tiny.model, tiny.tokenizer, [200, 300], n_trials=4, progress=False)
    assert result.accuracy == [0.5, 0.5]
    assert all(t["correct"] == (t["answer"] == t["passkey"]) for t in result.trials)


def test_passkey_runs_on_a_real_model(tiny):
    result = passkey_accuracy(tiny.model, tiny.tokenizer, [160], n_trials=2, progress=False)
    assert len(result.trials) == 2 and 0 <= result.accuracy[0] <= 1


def test_needle_sample_answer_survives_and_only_it_is_scored(tiny):
    tok = tiny.tokenizer
    s = needle_sample(tok, "bible", "heldout", 500, [0.2, 0.8], seed=3)
    assert s.tokens.shape == (500,) and s.answer_start + s.answer_len == 500
    assert tok.decode(s.tokens[s.answer_start:]).strip() == str(s.number)
    assert tok.decode(s.tokens).count(f"magic numbers for {s.key} is: {s.number}") == 2
    full = token_nll(tiny.model, s.tokens[None])
    result = needle_perplexity(tiny.model, [s], progress=False)
    expected = full[s.answer_start - 1: s.answer_start - 1 + s.answer_len].mean()
    assert result.nll == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(DataError, match="too short for 3 needle"):
        needle_sample(tok, "bible", "heldout", 60, [0.1, 0.5, 0.9], seed=0)
    assert len({d.key + str(d.number) for d in needle_samples(tok, "bible", "train", 300, 4)}) == 4


def test_needle_grid_shape_and_save(tiny, tmp_path):
    result = needle_grid(tiny.model, tiny.tokenizer, [0.0, 0.5, 1.0], [200, 300], progress=False)
    assert len(result.accuracy) == 3 and len(result.accuracy[0]) == 2 and len(result.trials) == 6
    assert all(math.isfinite(x) for row in result.answer_nll for x in row)
    path = write_results(result, tmp_path / "grid.json")
    assert json.loads(path.read_text())["lengths"] == [200, 300]


def test_short_context_regression(tiny):
    from workbench.data import samples
    from workbench.hf import spec_for_model

    docs = samples(tiny.tokenizer, "shakespeare", "heldout", 128, 2, progress=False)
    pi = spec_for_model(tiny.model, "linear", target_length=512)
    r = short_context_regression(tiny.model, docs, 128, after=pi, progress=False)
    assert r.before_label == "original" and r.after_label == "linear"
    assert r.change == pytest.approx(r.after_ppl / r.before_ppl - 1)
