from __future__ import annotations

import math

import numpy as np

from workbench.rope import make_spec, ramp_factors
from workbench.rope.diagnostics import format_pair_table, ood_angle_map, pair_diagnostics

SMOL = dict(head_dim=64, rope_theta=1e5, original_max_position_embeddings=8192)


def test_default_beyond_L0_is_out_of_distribution_from_first_slow_pair():
    d = pair_diagnostics(make_spec("default", **SMOL, target_length=16384))
    # pair i completes a turn within L0 iff wavelength 2 pi 1e5^(i/32) <= 8192 - 1: pairs 0..19
    assert not d.out_of_distribution[:20].any()
    assert d.out_of_distribution[20:].all()
    assert np.allclose(d.effective_factor, 1.0)
    assert d.critical_dim == 19


def test_pi_brings_every_pair_back_in_distribution():
    d = pair_diagnostics(make_spec("linear", **SMOL, target_length=16384))
    assert not d.out_of_distribution.any()
    assert np.allclose(d.effective_factor, 2.0, rtol=1e-6)


def test_n_hat_window_keeps_original_angles_for_first_positions():
    lam = ramp_factors(32, 10, 31, 1.0, 4.0)
    spec = make_spec("longrope", **SMOL, target_length=32768, long_factor=lam, n_hat=4096)
    d = pair_diagnostics(spec)
    # the largest angle of a slow pair is then reached inside the window: (n_hat - 1) * theta
    assert math.isclose(d.max_angle_target[31], max(4095 * d.theta[31], 32767 * d.inv_freq[31]))
    positions, ratio = ood_angle_map(spec, n_positions=50)
    assert ratio.shape == (32, len(positions))
    assert np.isnan(ratio[:20]).all()  # full-turn pairs are never out of distribution
    assert np.nanmax(ratio) > 1


def test_table_and_rows():
    d = pair_diagnostics(make_spec("yarn", **SMOL, target_length=16384))
    text = format_pair_table(d)
    assert "critical dim" in text and "<- critical dim" in text
    rows = d.rows()
    assert len(rows) == 32 and rows[0]["pair"] == 0
    assert d.yarn_low == 10 and d.yarn_high == 20


def test_methods_table_has_one_row_per_method_with_its_attention_factor():
    from workbench.rope import make_spec
    from workbench.rope.diagnostics import methods_table

    kw = dict(head_dim=64, rope_theta=100000.0, original_max_position_embeddings=8192, target_length=16384)
    table = methods_table({"default": make_spec("default", **kw), "yarn": make_spec("yarn", **kw)}).splitlines()
    assert len(table) == 4 and table[2].startswith("| default | 12 at 16384 | 1.000 | 1.00..1.00 |")
    assert table[3].startswith("| yarn | 0 at 16384 | 1.069 | 1.00..2.00 |")
