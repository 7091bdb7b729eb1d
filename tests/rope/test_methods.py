"""Parity of every method against transformers' own RoPE functions, and the defining properties."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from workbench.hf import hf_config_from_dict, to_hf
from workbench.rope import (
    available_methods,
    critical_dimension,
    longrope2_factors,
    make_spec,
    ramp_factors,
    spec_from_dict,
)

HEAD_DIMS = (32, 64, 128)
BASES = (10000.0, 100000.0, 500000.0)
FACTORS = (2.0, 4.0, 8.0, 32.0)
L0 = 4096


def geometry(head_dim, base, factor, **params):
    return dict(head_dim=head_dim, rope_theta=base, original_max_position_embeddings=L0, factor=factor, **params)


def hf_config_for(spec):
    """A LlamaConfig carrying the spec exactly as our export writes it."""
    cfg = {"model_type": "llama", "hidden_size": spec.head_dim * 4, "num_attention_heads": 4,
           "head_dim": spec.head_dim, "num_hidden_layers": 1, "intermediate_size": 8, "vocab_size": 8,
           "max_position_embeddings": L0}
    exp = to_hf(spec)
    return hf_config_from_dict(exp.apply(cfg))


def hf_frequencies(spec, seq_len=None):
    cfg = hf_config_for(spec)
    rope_type = cfg.rope_parameters["rope_type"]
    if rope_type == "default":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        return LlamaRotaryEmbedding.compute_default_rope_parameters(cfg)
    return ROPE_INIT_FUNCTIONS[rope_type](cfg, None, seq_len=seq_len)


def longrope_factors(head_dim, factor):
    D = head_dim // 2
    return ramp_factors(D, D // 4, D - 1, 1.0, factor * 1.25)


GRID = list(itertools.product(HEAD_DIMS, BASES, FACTORS))


@pytest.mark.parametrize("head_dim,base,factor", GRID)
@pytest.mark.parametrize("method", ["linear", "yarn", "llama3", "longrope", "ntk"])
def test_static_methods_match_transformers_bit_for_bit(method, head_dim, base, factor):
    params = {}
    if method == "longrope":
        params = dict(long_factor=longrope_factors(head_dim, factor))
    spec = make_spec(method, **geometry(head_dim, base, factor, **params))
    ours = spec.frequencies()
    inv, attention = hf_frequencies(spec, seq_len=spec.target_length)
    assert torch.equal(ours.inv_freq, inv.float())
    assert ours.attention_factor == pytest.approx(attention, rel=0, abs=0)


@pytest.mark.parametrize("head_dim,base,factor", GRID[::3])
@pytest.mark.parametrize("seq_len", [L0 // 2, L0, L0 + 1, 3 * L0, 16 * L0])
def test_dynamic_matches_transformers_at_each_length(head_dim, base, factor, seq_len):
    spec = make_spec("dynamic", **geometry(head_dim, base, factor))
    ours = spec.frequencies(seq_len)
    cfg = hf_config_for(spec)
    if seq_len <= L0:  # transformers restores the original frequencies up to L0
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        inv, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(cfg)
    else:  # ... and otherwise evaluates at max(position_ids) + 1, a 0-d tensor
        inv, _ = ROPE_INIT_FUNCTIONS["dynamic"](cfg, None, seq_len=torch.tensor(seq_len))
    assert torch.equal(ours.inv_freq, inv)


@pytest.mark.parametrize("seq_len", [100, L0, L0 + 1, 8 * L0])
def test_longrope_switches_short_long_like_transformers(seq_len):
    D = 32
    short = tuple(1.0 + 0.01 * i for i in range(D))
    spec = make_spec("longrope", **geometry(64, 10000.0, 8.0, long_factor=longrope_factors(64, 8.0), short_factor=short))
    inv, _ = hf_frequencies(spec, seq_len=seq_len)
    assert torch.equal(spec.frequencies(seq_len).inv_freq, inv)
    assert spec.uses_long(seq_len) == (seq_len > L0)


def test_all_factors_one_is_default():
    D = 32
    default = make_spec("default", **geometry(64, 10000.0, 1.0)).frequencies()
    for method, params in [("linear", {}), ("ntk", {}), ("dynamic", {}), ("yarn", {}), ("llama3", {}),
                           ("longrope", {"long_factor": (1.0,) * D, "attention_policy": "constant",
                                         "attention_factor": 1.0})]:
        f = make_spec(method, **geometry(64, 10000.0, 1.0, **params)).frequencies()
        assert torch.allclose(f.inv_freq, default.inv_freq, rtol=1e-6, atol=0), method
        assert f.attention_factor == 1.0, method


@pytest.mark.parametrize("factor", FACTORS)
def test_pi_is_default_divided_by_s(factor):
    default = make_spec("default", **geometry(64, 10000.0, 1.0)).frequencies().inv_freq
    pi = make_spec("linear", **geometry(64, 10000.0, factor)).frequencies().inv_freq
    assert torch.allclose(pi, default / factor, rtol=1e-7)


@pytest.mark.parametrize("head_dim,base,factor", GRID)
def test_yarn_lies_between_pi_and_default(head_dim, base, factor):
    default = make_spec("default", **geometry(head_dim, base, 1.0)).frequencies().inv_freq
    yarn = make_spec("yarn", **geometry(head_dim, base, factor)).frequencies().inv_freq
    eps = 1e-6
    assert torch.all(yarn <= default * (1 + eps))
    assert torch.all(yarn >= default / factor * (1 - eps))
    assert yarn[0] == default[0]  # fastest pair untouched
    assert torch.isclose(yarn[-1], default[-1] / factor, rtol=1e-6)  # slowest fully interpolated


@pytest.mark.parametrize("factor", FACTORS)
def test_ntk_slows_lowest_pair_by_s_and_keeps_highest(factor):
    d = 64
    default = make_spec("default", **geometry(d, 10000.0, 1.0)).frequencies().inv_freq.double()
    ntk = make_spec("ntk", **geometry(d, 10000.0, factor)).frequencies().inv_freq.double()
    # b' = b s^(d/(d-2)) slows pair D-1 by exactly s: theta'_{D-1} = theta_{D-1} / s
    assert ntk[0] == default[0]
    assert math.isclose(default[-1] / ntk[-1], factor, rel_tol=1e-5)


def test_dynamic_yarn_is_default_up_to_L0_and_static_yarn_at_target():
    static = make_spec("yarn", **geometry(64, 10000.0, 4.0))
    dyn = make_spec("yarn", **geometry(64, 10000.0, 4.0, dynamic=True))
    default = make_spec("default", **geometry(64, 10000.0, 1.0)).frequencies()
    assert torch.equal(dyn.frequencies(L0).inv_freq, default.inv_freq)
    assert dyn.frequencies(L0).attention_factor == 1.0
    assert torch.equal(dyn.frequencies(4 * L0).inv_freq, static.frequencies().inv_freq)
    assert dyn.is_length_dependent and not static.is_length_dependent


def test_attention_policies():
    D = 32
    lf = (2.0,) * D
    su = make_spec("longrope", **geometry(64, 10000.0, 16.0, long_factor=lf))
    yarn = make_spec("longrope", **geometry(64, 10000.0, 16.0, long_factor=lf, attention_policy="yarn"))
    const = make_spec("longrope", **geometry(64, 10000.0, 16.0, long_factor=lf, attention_policy="constant",
                                             attention_factor=1.3))
    assert su.frequencies().attention_factor == pytest.approx(math.sqrt(1 + math.log(16) / math.log(L0)))
    assert yarn.frequencies().attention_factor == pytest.approx(0.1 * math.log(16) + 1)
    assert const.frequencies().attention_factor == 1.3


def test_critical_dimension_formula():
    # SmolLM2-135M: D=32, b=1e5, L0=8192: ceil(32 * log_1e5(8192 / 2 pi)) - 1 = ceil(19.94) - 1 = 19
    assert critical_dimension(64, 1e5, 8192) == 19
    # Llama-2: D=64, b=1e4, L0=4096: ceil(64 * 0.70357) - 1 = ceil(45.03) - 1 = 45
    assert critical_dimension(128, 1e4, 4096) == 45


def test_longrope2_shape_below_critical_dim():
    cd = critical_dimension(64, 1e5, 8192)
    upper = [2.0 + 0.05 * i for i in range(32 - cd)]
    spec = make_spec("longrope2", head_dim=64, rope_theta=1e5, original_max_position_embeddings=8192,
                     factor=2.0, long_factor=longrope2_factors(upper, cd, 32))
    lam = spec.long_factor
    assert lam[0] == 1.0 and lam[cd] == 2.0
    for i in range(cd):
        assert lam[i] == pytest.approx(2.0 ** (i / cd))
    assert all(b >= a for a, b in zip(lam, lam[1:], strict=False))


@pytest.mark.parametrize("method", available_methods())
def test_spec_dict_round_trip(method):
    params = {}
    if method == "longrope":
        params = dict(long_factor=longrope_factors(64, 4.0), n_hat=8)
    if method == "longrope2":
        params = dict(long_factor=longrope2_factors([4.0 + 0.1 * i for i in range(32 - 15)], 15, 32), critical_dim=15)
    spec = make_spec(method, **geometry(64, 10000.0, 4.0, **params))
    again = spec_from_dict(spec.to_dict())
    assert again == spec and again.spec_hash() == spec.spec_hash()
