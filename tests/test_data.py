"""Offline corpora: fixed disjoint splits, exact-length samples, honest concatenation, clear errors."""

from __future__ import annotations

import pytest

from workbench.data import DataError, documents, samples, split_names, tokenized
from workbench.models import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("smollm2")


@pytest.mark.parametrize("source", ["shakespeare", "bible", "stdlib"])
def test_splits_are_disjoint_fixed_and_cover_the_source(source):
    s = split_names(source)
    assert set(s["train"]).isdisjoint(s["heldout"])
    assert len(s["train"]) + len(s["heldout"]) == len(documents(source))
    assert 0.15 < len(s["heldout"]) / len(documents(source)) < 0.3
    assert split_names(source) == s


def test_shakespeare_markup_is_removed():
    play = documents("shakespeare")[0]
    assert "**" not in play.text and not play.text.startswith("#")
    assert len(documents("shakespeare")) == 38 and len(documents("bible")) == 66


def test_samples_have_exact_length_and_come_from_the_split(tokenizer):
    out = samples(tokenizer, "shakespeare", "heldout", 4096, 3, progress=False)
    held = set(split_names("shakespeare")["heldout"])
    assert len(out) == 3
    for s in out:
        assert s.tokens.shape == (4096,) and not s.concatenated and s.names[0] in held
    corpus = tokenized(tokenizer, "shakespeare", progress=False)
    assert s.tokens.tolist() == corpus.doc(s.names[0])[:4096].tolist()


def test_short_documents_are_concatenated_and_say_so(tokenizer):
    # Bible books: few held-out ones exceed 60k tokens, so asking for many forces concatenation
    out = samples(tokenizer, "bible", "heldout", 60000, 4, progress=False)
    assert all(s.tokens.shape == (60000,) for s in out)
    assert any(s.concatenated and len(s.names) > 1 for s in out)
    assert all(" + " in s.label for s in out if s.concatenated)


def test_bad_requests(tokenizer):
    with pytest.raises(DataError, match="corpus='gutenberg' is not allowed: unknown corpus; known: shakespeare"):
        samples(tokenizer, "gutenberg", "heldout", 100, 1)
    with pytest.raises(DataError, match="split='test' is not allowed"):
        samples(tokenizer, "bible", "test", 100, 1)
    with pytest.raises(DataError, match="holds only .* tokens in all"):
        samples(tokenizer, "shakespeare", "heldout", 10_000_000, 1, progress=False)


def test_empty_corpus(monkeypatch, tokenizer):
    import workbench.data as data

    monkeypatch.setitem(data.SOURCES, "empty", lambda: [])
    data.documents.cache_clear()
    with pytest.raises(DataError, match="corpus 'empty' is empty"):
        samples(tokenizer, "empty", "heldout", 100, 1)
    data.documents.cache_clear()
