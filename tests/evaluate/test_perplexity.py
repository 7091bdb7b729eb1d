"""Perplexity: chunked head equals a plain forward, sliding window, prefix reuse, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.evaluate import EvalError, compare_methods, format_table, perplexity, token_nll
from workbench.events import ListSink
from workbench.hf import spec_for_model
from workbench.rope import ramp_factors


def docs(n=3, length=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 128, (length,), generator=g) for _ in range(n)]


def test_perplexity_is_exp_mean_nll_and_reports_curve(tiny_llama):
    sink = ListSink()
    d = docs()
    r = perplexity(tiny_llama, d, length=256, bucket_size=32, progress=False, sink=sink)
    nll = torch.cat([token_nll(tiny_llama, x[:256][None]) for x in d])
    assert r.ppl == pytest.approx(math.exp(float(nll.mean())), rel=1e-6)
    assert len(r.per_position_nll) == math.ceil(255 / 32) and r.n_documents == 3
    assert len(sink.of_kind("ppl.document")) == 3 and len(sink.of_kind("ppl.result")) == 1
    layers = sink.of_kind("ppl.layer")  # progress inside each forward: 2 decoder layers x 3 documents
    assert [e.data["layer"] for e in layers] == [1, 2] * 3 and layers[-1].data["layers"] == 2
    assert r.tail_ppl(0.25) > 0


def test_sliding_window_scores_every_token_once(tiny_llama):
    d = docs(1, length=300)
    r = perplexity(tiny_llama, d, length=128, mode="sliding", stride=64, progress=False)
    # windows start at 0, 64, 128, 172 (last window flush with the end): every prediction scored once
    assert r.tokens_forwarded == 128 * 4
    manual = torch.cat([
        token_nll(tiny_llama, d[0][0:128][None]),
        token_nll(tiny_llama, d[0][64:192][None], score_from=63),
        token_nll(tiny_llama, d[0][128:256][None], score_from=63),
        token_nll(tiny_llama, d[0][172:300][None], score_from=83),
    ])
    assert manual.shape == (299,)
    assert r.ppl == pytest.approx(math.exp(float(manual.mean())), rel=1e-6)


def test_compare_methods_prefix_reuse_equals_separate_run(tiny_llama):
    d = docs(2, length=256)
    yarn = spec_for_model(tiny_llama, "yarn", target_length=256)
    longrope = spec_for_model(tiny_llama, "longrope", target_length=256, long_factor=ramp_factors(8, 2, 7, 1.0, 5.0))
    results = compare_methods(tiny_llama, {"default": None, "yarn": yarn, "longrope": longrope}, d, [128, 256],
                              progress=False)
    by = {(r.label, r.length): r for r in results}
    assert len(results) == 6
    separate = perplexity(tiny_llama, d, spec=yarn, length=128, progress=False)
    assert by[("yarn", 128)].ppl == pytest.approx(separate.ppl, rel=1e-5)
    assert by[("yarn", 128)].notes and by[("longrope", 128)].notes == []  # longrope switches: run separately
    assert by[("longrope", 128)].ppl != by[("longrope", 256)].ppl
    table = format_table(results)
    assert "| yarn |" in table and "PPL @ 256" in table
    from workbench.evaluate import comparison_forwards

    planned = comparison_forwards({"default": None, "yarn": yarn, "longrope": longrope}, [256, 128], 2)
    assert planned == [(128, 2), (256, 6)]  # what the run did: longrope twice, the others once at the longest
    assert sum(r.tokens_forwarded for r in results) == sum(L * n for L, n in planned)


def test_bad_input(tiny_llama):
    d = docs(1, length=100)
    with pytest.raises(EvalError, match="stride=0 is not allowed"):
        perplexity(tiny_llama, d, length=64, mode="sliding", stride=0, progress=False)
    with pytest.raises(EvalError, match="stride=100 is not allowed: it must be in \\[1, window=64\\]"):
        perplexity(tiny_llama, d, length=64, mode="sliding", stride=100, progress=False)
    with pytest.raises(EvalError, match="length=200 is not allowed: the shortest document has only 100"):
        perplexity(tiny_llama, d, length=200, progress=False)
    with pytest.raises(EvalError, match="mode='fast' is not allowed"):
        perplexity(tiny_llama, d, mode="fast", progress=False)
    with pytest.raises(EvalError, match="no documents"):
        perplexity(tiny_llama, [], progress=False)
    with pytest.raises(EvalError, match="dtype='fp8' is not allowed"):
        perplexity(tiny_llama, d, dtype="fp8", progress=False)


def test_range_ppl_reads_a_span_of_positions_off_the_bucketed_curve():
    from workbench.data import Sample
    from workbench.evaluate import make_result

    nll = torch.rand(1023, generator=torch.Generator().manual_seed(0))  # 1024 tokens: 1023 predictions
    sample = Sample(torch.zeros(1024, dtype=torch.long), "t", "?", ["d"])
    r = make_result("x", 1024, "truncated", [sample], [nll], nll, 64, 0.0, 0, "fp32", None, None)
    assert r.range_ppl(0, 256) == pytest.approx(math.exp(float(nll[:256].mean())), rel=1e-6)
    assert r.range_ppl(256) == pytest.approx(math.exp(float(nll[256:].mean())), rel=1e-6)  # the last bucket is short
    assert r.range_ppl(0) == pytest.approx(r.ppl, rel=1e-6)
    with pytest.raises(EvalError, match="not on a bucket boundary"):
        r.range_ppl(100)
    with pytest.raises(EvalError, match="not inside"):
        r.range_ppl(2048, 4096)


@pytest.mark.parametrize("length, L0, width", [(12288, 8192, 128), (2048, 256, 32), (16384, 8192, 256), (100, 7, 1)])
def test_aligned_bucket_gives_about_64_points_with_a_boundary_at_L0(length, L0, width):
    from workbench.evaluate import aligned_bucket

    assert aligned_bucket(length, L0) == width and L0 % width == 0
