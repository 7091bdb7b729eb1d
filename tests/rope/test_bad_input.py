"""Each bad input gets an error naming the parameter, the value and what is allowed."""

from __future__ import annotations

import math

import pytest

from workbench.rope import SpecError, make_spec

G = dict(head_dim=64, rope_theta=10000.0, original_max_position_embeddings=4096)


def longrope(**kw):
    params = dict(long_factor=[1.0 + 0.1 * i for i in range(32)])
    params.update(kw)
    return make_spec("longrope", **G, target_length=16384, **params)


def test_factor_list_wrong_length():
    with pytest.raises(SpecError, match=r"long_factor has 10 values; it needs exactly 32"):
        longrope(long_factor=[1.0] * 10)
    with pytest.raises(SpecError, match=r"short_factor has 31 values"):
        longrope(short_factor=[1.0] * 31)


@pytest.mark.parametrize("bad,text", [(math.nan, "nan"), (math.inf, "inf"), (0.0, "0"), (-2.0, "-2")])
def test_non_finite_zero_negative_factors(bad, text):
    factors = [1.0] * 32
    factors[5] = bad
    with pytest.raises(SpecError, match=rf"long_factor\[5\]={text}"):
        longrope(long_factor=factors, enforce_monotone=False)


def test_non_monotone_factors_rejected_where_required():
    factors = [1.0 + 0.1 * i for i in range(32)]
    factors[10], factors[11] = 3.0, 2.0
    with pytest.raises(SpecError, match=r"must be non-decreasing .* long_factor\[10\]=3 > long_factor\[11\]=2"):
        longrope(long_factor=factors)
    assert longrope(long_factor=factors, enforce_monotone=False).long_factor[10] == 3.0


def test_target_below_L0():
    with pytest.raises(SpecError, match=r"target_length=2048 is not allowed: it is below original_max_position_embeddings=4096"):
        make_spec("yarn", **G, target_length=2048)
    with pytest.raises(SpecError, match=r"factor=0.5 is not allowed"):
        make_spec("linear", **G, factor=0.5)


def test_unknown_method():
    with pytest.raises(SpecError, match=r"method='rope-magic' is not allowed: unknown RoPE method; known: default, linear"):
        make_spec("rope-magic", **G, factor=2.0)


def test_unknown_parameter():
    with pytest.raises(SpecError, match=r"unknown parameter\(s\) \['beta_fastt'\] for method 'yarn'"):
        make_spec("yarn", **G, factor=2.0, beta_fastt=16)


@pytest.mark.parametrize("n_hat", [-1, 16385])
def test_n_hat_negative_or_beyond_target(n_hat):
    with pytest.raises(SpecError, match=rf"n_hat={n_hat} is not allowed: an integer in \[0, target length 16384\]"):
        longrope(n_hat=n_hat)


def test_head_dim_odd():
    with pytest.raises(SpecError, match=r"head_dim=63 is not allowed: an even integer"):
        make_spec("default", head_dim=63, rope_theta=10000.0, original_max_position_embeddings=4096)


def test_attention_policy_checks():
    with pytest.raises(SpecError, match=r"attention_policy='magic' is not allowed"):
        longrope(attention_policy="magic")
    with pytest.raises(SpecError, match=r"attention_factor=None is not allowed: a finite number > 0 when attention_policy='constant'"):
        longrope(attention_policy="constant")
    with pytest.raises(SpecError, match=r"attention_factor=1.2 is not allowed with attention_policy='su'"):
        longrope(attention_factor=1.2)


def test_yarn_and_llama3_parameter_checks():
    with pytest.raises(SpecError, match=r"beta_fast=1 is not allowed: a number > beta_slow=2"):
        make_spec("yarn", **G, factor=2.0, beta_fast=1.0, beta_slow=2.0)
    with pytest.raises(SpecError, match=r"high_freq_factor=1 is not allowed"):
        make_spec("llama3", **G, factor=2.0, low_freq_factor=1.0, high_freq_factor=1.0)


def test_longrope2_requires_ntk_shape_below_critical_dim():
    factors = [2.0] * 32
    with pytest.raises(SpecError, match=r"long_factor\[0\]=2 is not allowed: below critical_dim=20"):
        make_spec("longrope2", **G, factor=2.0, long_factor=factors, critical_dim=20)
    with pytest.raises(SpecError, match=r"critical_dim=40 is not allowed"):
        make_spec("longrope2", **G, factor=2.0, long_factor=factors, critical_dim=40)
