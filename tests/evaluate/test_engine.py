"""The NLL engine: the chunked LM head equals a plain forward; long forwards give heap pages back per layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workbench.evaluate import EvalError, resolve_dtype, token_nll
from workbench.evaluate.engine import NLLStream


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


def _stream_ids(n: int, seed: int = 7) -> torch.Tensor:
    return torch.randint(3, 128, (n,), generator=torch.Generator().manual_seed(seed))


def test_a_stream_read_in_chunks_equals_the_one_shot_forward(tiny_llama):
    ids = _stream_ids(200)
    whole = token_nll(tiny_llama, ids[None])
    stream = NLLStream(tiny_llama, ids, chunk_tokens=48)
    got = stream.advance(200)
    assert got.shape == whole.shape == (199,) and stream.done and stream.forwarded == 200
    assert (got - whole).abs().max() <= 1e-4  # fp32: every token's NLL


def test_a_stream_paused_and_continued_computes_what_one_read_straight_through_does(tiny_llama):
    ids = _stream_ids(150, seed=8)
    straight = NLLStream(tiny_llama, ids, chunk_tokens=32, stops=(70,)).advance(150)
    paused = NLLStream(tiny_llama, ids, chunk_tokens=32, stops=(70,))
    prefix = paused.advance(70).clone()
    assert paused.reached == 70 and prefix.shape == (70,) and torch.equal(prefix, straight[:70])
    assert torch.equal(paused.advance(150), straight) and paused.forwarded == 150  # the prefix is not read again
    paused.release()
    assert paused.reached == 0 and paused.cache_bytes == 0
    assert torch.equal(paused.advance(150), straight)  # read again from nothing: the same numbers


def test_a_stream_saved_and_restored_in_another_goes_on_exactly(tiny_llama, tmp_path):
    ids = _stream_ids(150, seed=11)
    straight = NLLStream(tiny_llama, ids, chunk_tokens=32).advance(150)
    first = NLLStream(tiny_llama, ids, chunk_tokens=32)
    first.advance(150, after_chunk=lambda s: s.reached >= 64)
    # interrupted inside the next chunk: its first layer's keys and a piece of its losses already written
    layer = first._cache.layers[0]
    first._cache.update(layer.keys[:, :, :5].clone(), layer.values[:, :, :5].clone(), 0)
    first._parts.append(torch.ones(5))
    torch.save(first.state(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert state["reached"] == 64 and len(state["nll"]) == 64  # the last whole chunk, and only it
    assert {k.shape[2] for pair in state["cache"] for k in pair} == {64}
    second = NLLStream(tiny_llama, ids, chunk_tokens=32)
    assert second.restore(state) and second.reached == 64
    assert torch.equal(second.advance(150), straight) and second.forwarded == 86  # the first 64 are not read again
    assert not NLLStream(tiny_llama, _stream_ids(150, seed=12), chunk_tokens=32).restore(state)  # other tokens
    other = NLLStream(tiny_llama, ids, chunk_tokens=48)
    assert not other.restore(state) and other.reached == 0  # read in other chunks: it would not be exact


def test_a_stream_stops_where_its_judge_says_and_holds_only_its_cache(tiny_llama):
    ids = _stream_ids(160, seed=9)
    stream = NLLStream(tiny_llama, ids, chunk_tokens=40)
    stream.advance(160, after_chunk=lambda s: s.reached >= 80)
    assert stream.reached == 80 and len(stream.nll) == 80
    cfg = tiny_llama.config
    per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    assert stream.cache_bytes == 80 * per_token  # keys and values of what was read, fp32, nothing else


def test_a_bf16_stream_gives_the_one_shot_perplexity(tiny_llama):
    ids = _stream_ids(256, seed=10)
    whole = token_nll(tiny_llama, ids[None], dtype="bf16").mean().exp()
    got = NLLStream(tiny_llama, ids, dtype="bf16", chunk_tokens=64).advance(256).mean().exp()
    assert abs(float(got / whole) - 1) < 1e-3


def test_a_stream_with_length_dependent_frequencies_pins_them_to_the_window(tiny_llama):
    from workbench.hf import spec_for_model
    from workbench.patch import patch

    L0 = tiny_llama.config.max_position_embeddings
    spec = spec_for_model(tiny_llama, "longrope", factor=2.0, long_factor=[1.0 + i / 8 for i in range(8)])
    ids = _stream_ids(2 * L0, seed=11)
    with patch(tiny_llama, spec):  # one forward of the whole window: long factors everywhere
        whole = token_nll(tiny_llama, ids[None])
    with patch(tiny_llama, spec, length=2 * L0) as p:  # the first chunk alone would have used short factors
        got = NLLStream(tiny_llama, ids, chunk_tokens=L0 // 2).advance(2 * L0)
    assert p.reprefills == 0 and (got - whole).abs().max() <= 1e-4
    with pytest.raises(Exception, match="length=0 is not allowed"):
        patch(tiny_llama, spec, length=0)
