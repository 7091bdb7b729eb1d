"""The NLL engine: the chunked LM head equals a plain forward; long forwards give heap pages back per layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workbench.evaluate import EvalError, resolve_dtype, token_nll


def test_chunked_nll_equals_plain_forward_loss(tiny_llama):
    ids = torch.randint(3, 128, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = tiny_llama(ids).logits[0, :-1]
    expected = F.cross_entropy(logits, ids[0, 1:], reduction="none")
    got = token_nll(tiny_llama, ids, chunk_size=37)
    assert got.shape == (299,)
    assert torch.allclose(got, expected, atol=1e-5)


def test_score_from_skips_the_first_predictions(tiny_llama):
    ids = torch.randint(3, 128, (1, 50), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(token_nll(tiny_llama, ids, score_from=20), token_nll(tiny_llama, ids)[20:], atol=1e-6)


def test_dtype_choice_is_checked():
    assert resolve_dtype("fp32") == "fp32" and resolve_dtype("auto") in ("fp32", "bf16")
    with pytest.raises(EvalError, match="dtype='fp8' is not allowed"):
        resolve_dtype("fp8")


def test_long_forwards_trim_the_heap_after_each_layer(tiny_llama, monkeypatch):
    from workbench import heap

    heap.trim_heap()  # callable here (glibc) or a no-op elsewhere: never raises
    calls = []
    monkeypatch.setattr(heap, "trim_heap", lambda: calls.append(1))
    ids = torch.randint(3, 128, (1, 40), generator=torch.Generator().manual_seed(5))
    plain = token_nll(tiny_llama, ids)
    assert calls == []  # short forwards do not pay for it
    monkeypatch.setattr(heap, "TRIM_FROM", 32)
    seen = []
    trimmed = token_nll(tiny_llama, ids, on_layer=lambda done, total: seen.append(done))
    assert len(calls) == tiny_llama.config.num_hidden_layers and seen == [1, 2]  # and progress still reported
    assert torch.equal(plain, trimmed)
