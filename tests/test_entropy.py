"""Block-wise attention entropy equals a direct eager computation; memory stays linear; bad input."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.entropy import (
    EntropyError,
    EntropyProbe,
    attention_entropy,
    eager_entropy,
    without_attention_factor,
)
from workbench.hf import spec_for_model
from workbench.rope import ramp_factors

IDS = torch.randint(3, 128, (1, 96), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("family", "key_block"), [("llama", 1024), ("llama", 10), ("qwen2", 7), ("phi3", 33)])
def test_blockwise_entropy_equals_eager_attention(tiny_model_factory, family, key_block):
    model = tiny_model_factory(family)
    result = attention_entropy(model, IDS, bucket_size=16, query_block=7, key_block=key_block)
    ent, mw = eager_entropy(model, IDS, bucket_size=16)
    assert torch.allclose(torch.tensor(result.entropy, dtype=torch.float64), ent, atol=1e-5)
    assert torch.allclose(torch.tensor(result.max_weight, dtype=torch.float64), mw, atol=1e-5)
    assert result.rows_per_bucket == [16] * 6 and result.n_heads == 4


def test_entropy_under_a_spec_matches_eager_with_the_same_patch(tiny_llama):
    spec = spec_for_model(tiny_llama, "longrope", target_length=256, long_factor=ramp_factors(8, 1, 7, 1.0, 6.0),
                          n_hat=8)
    ids = torch.randint(3, 128, (1, 100), generator=torch.Generator().manual_seed(1))  # beyond L0 = 64: long factors
    result = attention_entropy(tiny_llama, ids, spec=spec, bucket_size=25, key_block=16)
    from workbench.patch import patch

    with patch(tiny_llama, spec):
        ent, _ = eager_entropy(tiny_llama, ids, bucket_size=25)
    assert torch.allclose(torch.tensor(result.entropy, dtype=torch.float64), ent, atol=1e-5)


def test_attention_factor_sharpens_attention(tiny_llama):
    ids = torch.randint(3, 128, (1, 200), generator=torch.Generator().manual_seed(2))
    yarn = spec_for_model(tiny_llama, "yarn", target_length=256)  # attention factor 0.1 ln 4 + 1 = 1.139
    with_factor = attention_entropy(tiny_llama, ids, spec=yarn)
    without = attention_entropy(tiny_llama, ids, spec=without_attention_factor(yarn))
    assert without_attention_factor(yarn).frequencies().attention_factor == 1.0
    assert sum(with_factor.by_position()) < sum(without.by_position())  # logits x 1.3: lower entropy


def test_uniform_attention_bound_and_sampling(tiny_llama):
    ids = torch.randint(3, 128, (1, 128), generator=torch.Generator().manual_seed(3))
    full = attention_entropy(tiny_llama, ids, bucket_size=32)
    for value, bound in zip(full.by_position(), full.uniform_reference(), strict=True):
        assert 0 <= value <= bound + 1e-6
    sampled = attention_entropy(tiny_llama, ids, bucket_size=32, queries_per_bucket=8)
    assert sampled.rows_per_bucket == [8, 8, 8, 8] and "sampled" in sampled.notes[0]
    assert abs(sum(sampled.by_position()) - sum(full.by_position())) < 0.15 * sum(full.by_position())


def test_probe_temperatures_in_one_forward(tiny_llama):
    ids = torch.randint(3, 128, (1, 64), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), EntropyProbe(tiny_llama, layers=[1], temperatures=(1.0, 0.5)) as probe:
        tiny_llama(ids)
    a, b = probe.results("x")
    assert a.layers == [1] and b.temperature == 0.5 and "logits x 0.5" in b.notes[0]
    assert sum(b.by_position()) > sum(a.by_position())  # softer logits, higher entropy
    assert math.isfinite(sum(a.max_weight_by_position()))


def test_bad_input(tiny_llama):
    with pytest.raises(EntropyError, match=r"layers=\[5\] is not allowed: the model has layers 0..1"):
        attention_entropy(tiny_llama, IDS, layers=[5])
    with pytest.raises(EntropyError, match="batch size 1"):
        attention_entropy(tiny_llama, torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(EntropyError, match="query_block=0"):
        attention_entropy(tiny_llama, IDS, query_block=0)
    with pytest.raises(EntropyError, match="key_block=-1 is not allowed"):
        attention_entropy(tiny_llama, IDS, key_block=-1)


def test_reduction_buffers_do_not_grow_with_length(tiny_llama):
    """Every tensor the reduction makes is at most heads x query_block x key_block (plus per-row state):
    a row block never holds its whole causal prefix, so a 16k run needs no more scratch than a 1k one."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.is_view:  # a view of q or k allocates nothing
                return out
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.dim() >= 2:  # 1-D row indices are length n, and fine
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    heads, kv, d, qb, kb = 4, 2, 8, 8, 32
    sizes = {}
    for n in (256, 2048):
        gen = torch.Generator().manual_seed(n)
        q, k = torch.randn(heads, n, d, generator=gen), torch.randn(kv, n, d, generator=gen)
        probe = EntropyProbe(tiny_llama, layers=[0], query_block=qb, key_block=kb)
        Largest.numel = 0
        with Largest():
            probe._reduce(0, q, k, 0.125)
        sizes[n] = Largest.numel
        h, _, count = probe.stats[(1.0, 0)]
        assert count.sum() == n and torch.isfinite(h).all()
    assert sizes[2048] == sizes[256] <= heads * qb * kb  # not heads x query_block x n (= 65536 at 2048)


def test_probe_rides_on_perplexity_forwards_and_pools_documents(tiny_llama):
    from workbench.evaluate import compare_methods

    docs = [torch.randint(3, 128, (128,), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    probes = {}

    def probe(label, length):
        probes[label] = EntropyProbe(tiny_llama, bucket_size=32)
        return probes[label]

    compare_methods(tiny_llama, {"default": None}, docs, [64, 128], progress=False, probe=probe)
    pooled = probes["default"].results("default")[0]
    assert pooled.rows_per_bucket == [64, 64, 64, 64]  # two documents of 128 tokens
    singles = [attention_entropy(tiny_llama, d, bucket_size=32) for d in docs]
    mean = (torch.tensor(singles[0].entropy) + torch.tensor(singles[1].entropy)) / 2
    assert torch.allclose(torch.tensor(pooled.entropy), mean, atol=1e-6)
