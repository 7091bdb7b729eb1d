"""Per-pair diagnostics for any spec: what each frequency pair does before and after rescaling.

The out-of-distribution (OOD) view: pair i rotates by ``n * inv_freq_i`` at position n. In training
it saw angles up to ``(L0 - 1) * theta_i``. If that is at least 2 pi the pair has seen every angle
and cannot go out of distribution; otherwise an angle beyond ``L0 * theta_i`` (one step past the last
trained position, so PI's half-step overshoot at ``(L - 1) / s`` does not count) is new to the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import RopeSpec
from .llama3 import Llama3Spec
from .yarn import YarnSpec, yarn_boundaries

TWO_PI = 2 * math.pi


@dataclass(frozen=True)
class PairDiagnostics:
    """Arrays of length D (one entry per pair) and the scalars that frame them."""

    pair: np.ndarray  # (D,) int
    theta: np.ndarray  # original inv_freq
    inv_freq: np.ndarray  # rescaled inv_freq at the evaluated length
    wavelength: np.ndarray  # 2 pi / theta, tokens per full turn before rescaling
    scaled_wavelength: np.ndarray  # 2 pi / inv_freq
    effective_factor: np.ndarray  # theta / inv_freq (lambda_i)
    rotations_in_L0: np.ndarray  # L0 / wavelength
    max_angle_trained: np.ndarray  # (L0 - 1) * theta
    max_angle_target: np.ndarray  # largest angle reached at the evaluated length
    ood_ratio: np.ndarray  # max_angle_target / max_angle_trained
    out_of_distribution: np.ndarray  # bool: trained < 2 pi and target > trained
    seq_len: int
    attention_factor: float
    critical_dim: int
    yarn_low: float
    yarn_high: float
    llama3_wavelength_thresholds: tuple[float, float]

    def rows(self) -> list[dict[str, float]]:
        """One dict per pair, for tables and JSON."""
        keys = (
            "pair", "theta", "inv_freq", "wavelength", "scaled_wavelength", "effective_factor",
            "rotations_in_L0", "max_angle_trained", "max_angle_target", "ood_ratio", "out_of_distribution",
        )
        out = []
        for i in range(len(self.pair)):
            out.append({k: getattr(self, k)[i].item() for k in keys})
        return out


def pair_diagnostics(spec: RopeSpec, seq_len: int | None = None) -> PairDiagnostics:
    """Diagnostics of ``spec`` for a sequence of ``seq_len`` tokens (default: its target length)."""
    L0 = spec.original_max_position_embeddings
    n = spec.target_length if seq_len is None else int(seq_len)
    freqs = spec.frequencies(n)
    theta = spec.original_inv_freq().double().numpy()
    inv = freqs.inv_freq.double().numpy()
    window = min(spec.n_hat, n)
    # positions < n_hat rotate with theta, the rest with inv_freq; the largest angle is at the end of each part
    max_target = (n - 1) * inv
    if window > 0:
        max_target = np.maximum(max_target, (window - 1) * theta)
    trained = (L0 - 1) * theta
    wavelength = TWO_PI / theta
    # landmarks: the spec's own where it is that method, else the method's defaults drawn for reference
    betas = spec.ramp_betas() if isinstance(spec, YarnSpec) else (YarnSpec.beta_fast, YarnSpec.beta_slow)
    low, high = yarn_boundaries(spec.head_dim, spec.rope_theta, L0, *betas)
    llama3 = spec if isinstance(spec, Llama3Spec) else Llama3Spec(
        head_dim=spec.head_dim, rope_theta=spec.rope_theta, original_max_position_embeddings=L0)
    return PairDiagnostics(
        pair=np.arange(len(theta)),
        theta=theta,
        inv_freq=inv,
        wavelength=wavelength,
        scaled_wavelength=TWO_PI / inv,
        effective_factor=theta / inv,
        rotations_in_L0=L0 / wavelength,
        max_angle_trained=trained,
        max_angle_target=max_target,
        ood_ratio=max_target / trained,
        out_of_distribution=(trained < TWO_PI) & (max_target > L0 * theta),
        seq_len=n,
        attention_factor=freqs.attention_factor,
        critical_dim=spec.critical_pair(),
        yarn_low=float(low),
        yarn_high=float(high),
        llama3_wavelength_thresholds=llama3.wavelength_thresholds(),
    )


def ood_angle_map(spec: RopeSpec, n_positions: int = 96, seq_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Angle reached / largest angle seen in training, per pair and position.

    Returns:
        (positions (P,), ratio (D, P)). Entries > 1 are angles the model never saw; NaN marks pairs
        that completed a full turn within L0 (every angle seen, never out of distribution).
    """
    n = spec.target_length if seq_len is None else int(seq_len)
    positions = np.unique(np.linspace(0, n - 1, n_positions).round().astype(np.int64))
    theta = spec.original_inv_freq().double().numpy()
    inv = spec.frequencies(n).inv_freq.double().numpy()
    rate = np.where(positions[None, :] < spec.n_hat, theta[:, None], inv[:, None])  # (D, P)
    angles = positions[None, :] * rate
    trained = (spec.original_max_position_embeddings - 1) * theta
    ratio = angles / trained[:, None]
    ratio[trained >= TWO_PI, :] = np.nan
    return positions, ratio


def format_pair_table(diag: PairDiagnostics, every: int = 1) -> str:
    """A fixed-width text table of the diagnostics (``every``-th pair) for the CLI."""
    head = (
        f"{'pair':>4} {'wavelength':>11} {'rot/L0':>8} {'lambda':>8} {'new wavelen':>11} "
        f"{'max angle L0':>12} {'max angle L':>12} {'OOD':>4}"
    )
    lines = [head, "-" * len(head)]
    for i in range(0, len(diag.pair), every):
        marks = []
        if i == diag.critical_dim:
            marks.append("<- critical dim")
        lines.append(
            f"{i:>4} {diag.wavelength[i]:>11.1f} {diag.rotations_in_L0[i]:>8.2f} "
            f"{diag.effective_factor[i]:>8.3f} {diag.scaled_wavelength[i]:>11.1f} "
            f"{diag.max_angle_trained[i]:>12.2f} {diag.max_angle_target[i]:>12.2f} "
            f"{'yes' if diag.out_of_distribution[i] else '':>4} {' '.join(marks)}".rstrip()
        )
    lines.append(
        f"attention factor {diag.attention_factor:.4f} | critical dim {diag.critical_dim} | "
        f"YaRN ramp pairs {diag.yarn_low:g}..{diag.yarn_high:g} | Llama-3 wavelength thresholds "
        f"{diag.llama3_wavelength_thresholds[0]:g} / {diag.llama3_wavelength_thresholds[1]:g} tokens | "
        f"OOD pairs at L={diag.seq_len}: {int(diag.out_of_distribution.sum())}"
    )
    return "\n".join(lines)


def methods_table(specs: dict[str, RopeSpec]) -> str:
    """Per method (a name and its spec): pairs out of distribution at its target length, attention factor, and
    the range of its per-pair factors lambda (a markdown table)."""
    rows = ["| method | pairs out of distribution | attention factor | lambda range |", "|---|---|---|---|"]
    for name, spec in specs.items():
        d = pair_diagnostics(spec)
        rows.append(f"| {name} | {int(d.out_of_distribution.sum())} at {spec.target_length} | "
                    f"{d.attention_factor:.3f} | {d.effective_factor.min():.2f}..{d.effective_factor.max():.2f} |")
    return "\n".join(rows)

