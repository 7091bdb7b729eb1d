"""The maths behind the teaching figures: which pairs complete a turn within L0, the arcs, the logit by distance,
entropy growth, attention sinks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.lessons import (
    FrequencyReport,
    arc_points,
    decay_logit,
    fit_logit,
    fitted_logit,
    length_invariant_scale,
    logit_scales,
    pair_arc,
    softmax_entropy,
    turns,
)
from workbench.rope import make_spec, su_attention_factor


def smollm2(method="default", **kw):
    return make_spec(method, head_dim=64, rope_theta=100000.0, original_max_position_embeddings=8192, factor=2.0, **kw)


@pytest.mark.parametrize("theta, L0", [(100000.0, 8192), (500.0, 256)])  # SmolLM2; the teaching model
def test_pair_19_is_the_last_full_turn_and_pair_20_the_first_that_is_not(theta, L0):
    spec = make_spec("default", head_dim=64, rope_theta=theta, original_max_position_embeddings=L0, factor=2.0)
    t = turns(spec)
    assert (t.last_full_turn, t.first_partial) == (19, 20)
    assert t.wavelengths[19] < L0 < t.wavelengths[20]
    assert (L0 - 1) * 2 * math.pi / t.wavelengths[19] >= 2 * math.pi > (L0 - 1) * 2 * math.pi / t.wavelengths[20]


def test_the_frequency_report_says_which_pairs_turn_and_round_trips():
    report = FrequencyReport.of("smollm2", make_spec("default", head_dim=64, rope_theta=100000.0,
                                                     original_max_position_embeddings=8192, target_length=16384))
    assert (report.last_pair_with_full_turn_in_L0, report.first_pair_without_full_turn_in_L0) == (19, 20)
    assert report.pairs_without_full_turn_in_L0 == 12 and 0 < report.pairs_out_of_distribution_at_target <= 12
    assert report.wavelength_last_full_turn < 8192 < report.wavelength_first_partial
    assert "pair 19 is the last pair" in report.summary() and "critical dimension" in report.summary()
    assert report.table in report.markdown() and len(report.table.splitlines()) > 16
    assert FrequencyReport.from_dict(report.to_dict() | {"table": report.table}) == report


def test_arcs_new_angles_without_rescaling_and_none_under_pi():
    plain, pi = smollm2(), smollm2("linear")
    assert pair_arc(plain, 0).full_turn and pair_arc(plain, 0).new == 0
    slow = pair_arc(plain, 31)
    assert not slow.full_turn and slow.new == pytest.approx(slow.reached - slow.trained)
    assert slow.reached == pytest.approx(2 * slow.trained, rel=1e-3)  # twice the length, twice the angle
    assert pair_arc(pi, 31).new == 0  # PI slows every pair by s: no angle beyond the trained arc
    x, y = arc_points(0, math.pi / 2, n=5)
    assert np.allclose(x**2 + y**2, 1) and x[0] == 1 and abs(y[-1] - 1) < 1e-12


def test_logit_decays_with_distance_and_the_fit_blows_up_beyond_L0_but_not_under_pi():
    spec = smollm2()
    d = np.array([0, 10, 100, 1000])
    assert decay_logit(spec, d)[0] == pytest.approx(1.0)
    assert decay_logit(spec, np.arange(4096, 8192)).mean() < decay_logit(spec, np.arange(0, 64)).mean()
    coef = fit_logit(spec)
    within, beyond = np.arange(0, 8192), np.arange(8192, 16384)
    plain_in = np.abs(fitted_logit(coef, spec, within)).max()
    assert np.abs(fitted_logit(coef, spec, beyond)).max() > 3 * plain_in
    assert np.abs(fitted_logit(coef, smollm2("linear"), beyond)).max() <= plain_in * 1.01  # PI reads inside the fit


def test_entropy_grows_with_keys_and_a_larger_logit_scale_sharpens_it():
    n = np.array([16, 256, 4096])
    h = softmax_entropy(n)
    assert h[0] < h[1] < h[2] and np.all(h <= np.log(n))
    assert np.all(softmax_entropy(n, logit_scale=1.2) < h)
    assert length_invariant_scale(16384, 8192) == pytest.approx(su_attention_factor(2.0, 8192) ** 2)


def test_attention_to_first_keys_sums_below_one(tiny_llama):
    import torch

    from workbench.lessons import attention_to_first_keys

    w = attention_to_first_keys(tiny_llama, torch.arange(64) % 50, n_keys=8)
    assert w.shape == (8,) and np.all(w >= 0) and w.sum() <= 1 + 1e-6


def test_logit_scales_are_each_attention_factor_squared_and_the_length_invariant_one():
    from workbench.rope import method_specs

    specs = method_specs(smollm2(), ["yarn", "longrope"])
    scales = logit_scales(specs, 16384)
    assert list(scales) == ["no attention factor", "yarn", "longrope", "ln L / ln L0"]
    assert scales["yarn"] == pytest.approx((0.1 * math.log(2.0) + 1) ** 2)
    assert scales["longrope"] == pytest.approx(su_attention_factor(2.0, 8192) ** 2)
    assert scales["ln L / ln L0"] == pytest.approx(math.log(16384) / math.log(8192))
