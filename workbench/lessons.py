"""The maths behind the teaching figures of notebooks 01 and 02 (drawn by :mod:`widgets.teaching`).

- which pairs complete a full turn within the training length L0 (and so can never meet a new angle);
- per pair, the arc of angles seen in training and the arc a longer input adds;
- the attention logit between two fixed vectors as a function of their distance: RoPE's long-term decay,
  and a logit curve fitted to random values within L0 that blows up when extrapolated beyond L0 but stays
  bounded when a method rescales the frequencies (the argument of the Position Interpolation paper);
- why attention entropy grows with the number of keys, and how an attention factor pulls it back;
- how much attention the first tokens receive (attention sinks: LongRoPE's start-token window n̂).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .rope import RopeSpec

TWO_PI = 2 * math.pi


@dataclass(frozen=True)
class Turns:
    """Which pairs went round the circle at least once within L0 (positions 0..L0-1)."""

    n_pairs: int
    last_full_turn: int  # the last pair whose trained angles cover the whole circle (-1: none)
    first_partial: int  # the first pair that never completed a turn (n_pairs: none)
    wavelengths: np.ndarray  # 2 pi / theta_i, tokens per turn


def turns(spec: RopeSpec) -> Turns:
    """Pairs whose largest trained angle ``(L0 - 1) theta_i`` reaches ``2 pi``: pair i's wavelength fits in L0."""
    theta = spec.original_inv_freq().double().numpy()
    full = (spec.original_max_position_embeddings - 1) * theta >= TWO_PI
    last = int(np.flatnonzero(full).max()) if full.any() else -1
    partial = np.flatnonzero(~full)
    return Turns(len(theta), last, int(partial.min()) if partial.size else len(theta), TWO_PI / theta)


@dataclass(frozen=True)
class PairArc:
    """Angles (radians) pair ``pair`` reaches: ``[0, trained]`` in training, ``[0, reached]`` at ``seq_len``."""

    pair: int
    trained: float  # (L0 - 1) theta_i
    reached: float  # largest angle at seq_len under the spec (n̂ included)
    seq_len: int
    theta: float  # theta_i: one position's step

    @property
    def full_turn(self) -> bool:
        return self.trained >= TWO_PI

    @property
    def new(self) -> float:
        """Radians of the circle the longer input reaches that training never did (0 when none). Up to one step
        past the last trained position counts as seen (so PI's half-step overshoot at ``(L - 1) / s`` does not)."""
        if self.full_turn or self.reached <= self.trained + self.theta:
            return 0.0
        return max(0.0, min(self.reached, TWO_PI) - self.trained)


def pair_arc(spec: RopeSpec, pair: int, seq_len: int | None = None) -> PairArc:
    """The trained and reached arcs of one pair under ``spec`` (a method's rescaled frequencies included)."""
    from .rope.diagnostics import pair_diagnostics

    d = pair_diagnostics(spec, seq_len)
    return PairArc(pair, float(d.max_angle_trained[pair]), float(d.max_angle_target[pair]), d.seq_len,
                   float(d.theta[pair]))


def arc_points(start: float, end: float, radius: float = 1.0, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) = radius (cos a, sin a) for a from ``start`` to ``end`` (at most one full turn)."""
    a = np.linspace(start, min(end, start + TWO_PI), n)
    return radius * np.cos(a), radius * np.sin(a)


def decay_logit(spec: RopeSpec, distances: np.ndarray) -> np.ndarray:
    """The logit ``q^T R(d) k`` for ``q = k`` = all ones, divided by its value at distance 0:
    ``(1/D) sum_i cos(d theta_i)``. RoPE's long-term decay: far tokens get smaller logits on average."""
    theta = spec.original_inv_freq().double().numpy()
    return np.cos(np.outer(distances, theta)).mean(axis=1)


def fit_logit(spec: RopeSpec, n_points: int = 400, ridge: float = 0.1, seed: int = 0) -> np.ndarray:
    """Coefficients ``(c_i, s_i)`` of a logit curve ``a(d) = sum_i c_i cos(d theta_i) + s_i sin(d theta_i)`` (what
    ``q^T R(d) k`` is for some q, k) fitted by least squares to random values in [-1, 1] at random distances in
    [0, L0): a curve a model could have learned in training. The slowest pairs are nearly constant over [0, L0),
    so a plain fit cancels huge coefficients against each other; ``ridge`` keeps them of the size a trained
    model's would be. Returns an array of shape (2, D)."""
    rng = np.random.default_rng(seed)
    L0 = spec.original_max_position_embeddings
    d = rng.uniform(0, L0 - 1, n_points)
    y = rng.uniform(-1, 1, n_points)
    theta = spec.original_inv_freq().double().numpy()
    design = np.concatenate([np.cos(np.outer(d, theta)), np.sin(np.outer(d, theta))], axis=1)  # (points, 2D)
    coef = np.linalg.solve(design.T @ design + ridge * np.eye(design.shape[1]), design.T @ y)
    return coef.reshape(2, -1)


def fitted_logit(coef: np.ndarray, spec: RopeSpec, distances: np.ndarray) -> np.ndarray:
    """The fitted curve read with ``spec``'s frequencies at its target length, times its logit scale m²."""
    f = spec.frequencies()
    inv = f.inv_freq.double().numpy()
    angles = np.outer(distances, inv)  # (distances, D)
    return (np.cos(angles) @ coef[0] + np.sin(angles) @ coef[1]) * f.attention_factor**2


def softmax_entropy(n_keys: np.ndarray, sigma: float = 2.5, logit_scale: float = 1.0, samples: int = 48,
                    seed: int = 0) -> np.ndarray:
    """Mean entropy (nats) of ``softmax(logit_scale * z)`` over ``n`` keys with logits ``z ~ N(0, sigma²)``, for
    each n in ``n_keys``: it grows like ``ln n - (logit_scale sigma)² / 2`` — more keys, flatter attention."""
    out = []
    for n in np.asarray(n_keys, dtype=int):
        z = np.random.default_rng(seed).normal(0, sigma, (samples, n)) * logit_scale  # the same draws at every scale
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out.append(float(-(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1).mean()))
    return np.array(out)


def length_invariant_scale(seq_len: int, original_max_position_embeddings: int) -> float:
    """The logit multiplier ``ln L / ln L0`` that keeps the entropy's ``ln n`` growth in check at length L:
    LongRoPE's attention factor ``m = sqrt(1 + ln s / ln L0)`` is its square root (logits scale by m²)."""
    return math.log(seq_len) / math.log(original_max_position_embeddings)


def attention_to_first_keys(model: Any, tokens: Any, n_keys: int = 16) -> np.ndarray:
    """Mean attention weight each of the first ``n_keys`` key positions receives, averaged over layers, heads
    and the query rows from ``n_keys`` on (an eager forward: keep ``tokens`` short, a few hundred).

    A large weight on position 0 whatever the text says is an *attention sink*: the model parks attention on
    the first tokens, which is why LongRoPE leaves the first n̂ positions unrescaled.
    """
    import torch

    from .entropy import eager_attentions

    att = eager_attentions(model, tokens)  # layers x (1, heads, n, n)
    stacked = torch.stack([a[0, :, n_keys:, :n_keys] for a in att])  # (layers, heads, queries, n_keys)
    return stacked.double().mean(dim=(0, 1, 2)).numpy()


__all__ = ["PairArc", "Turns", "arc_points", "attention_to_first_keys", "decay_logit", "fit_logit", "fitted_logit",
           "length_invariant_scale", "pair_arc", "softmax_entropy", "turns"]
