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
from dataclasses import asdict, dataclass
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
class FrequencyReport:
    """What a model's frequency pairs do at a target length, before any rescaling (notebook 01's results): which
    pairs went round within L0, which meet new angles at the target, the critical dimension, and the pair table."""

    model: str
    target_length: int
    original_max_position_embeddings: int
    n_pairs: int
    critical_dim: int
    last_pair_with_full_turn_in_L0: int
    first_pair_without_full_turn_in_L0: int
    pairs_out_of_distribution_at_target: int
    wavelength_last_full_turn: float  # tokens per turn of the last pair that completes one within L0
    wavelength_first_partial: float  # tokens per turn of the first pair that does not
    table: str  # the pair table, every n_pairs // 16 pairs

    @classmethod
    def of(cls, model: str, spec: RopeSpec) -> FrequencyReport:
        """The report of ``spec`` read at its target length (an unscaled spec: what the model meets untouched)."""
        from .rope.diagnostics import format_pair_table, pair_diagnostics

        diag, t = pair_diagnostics(spec), turns(spec)
        wave = [float(t.wavelengths[i]) if 0 <= i < t.n_pairs else math.nan for i in (t.last_full_turn, t.first_partial)]
        return cls(model, spec.target_length, spec.original_max_position_embeddings, t.n_pairs, diag.critical_dim,
                   t.last_full_turn, t.first_partial, int(diag.out_of_distribution.sum()), wave[0], wave[1],
                   format_pair_table(diag, every=max(1, spec.n_pairs // 16)))

    @property
    def pairs_without_full_turn_in_L0(self) -> int:
        return self.n_pairs - self.first_pair_without_full_turn_in_L0

    def summary(self) -> str:
        """Which pairs went round within L0 and which meet new angles at the target."""
        L0, last, first = self.original_max_position_embeddings, self.last_pair_with_full_turn_in_L0, \
            self.first_pair_without_full_turn_in_L0
        return (f"pair {last} is the last pair that completes a turn within L0 = {L0} (one turn every "
                f"{self.wavelength_last_full_turn:,.0f} tokens); pair {first} is the first that does not "
                f"({self.wavelength_first_partial:,.0f} tokens per turn): pairs {first} to {self.n_pairs - 1} meet "
                f"new angles beyond L0; {self.pairs_out_of_distribution_at_target} of {self.n_pairs} pairs reach "
                f"angles outside training at {self.target_length} tokens; critical dimension {self.critical_dim}")

    def markdown(self) -> str:
        """The pair table (wavelength, turns within L0, angles trained and reached), as preformatted text."""
        return f"```\n{self.table}\n```"

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "table"}
        return {**out, "pairs_without_full_turn_in_L0": self.pairs_without_full_turn_in_L0}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrequencyReport:
        return cls(**{k: data.get(k, "") if k == "table" else data[k] for k in cls.__dataclass_fields__})


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


def logit_scales(specs: dict[str, RopeSpec], seq_len: int) -> dict[str, float]:
    """The logit multipliers notebook 02 compares at ``seq_len``: none, each spec's attention factor squared (its
    logits scale by m²), and the length-invariant ``ln L / ln L0``."""
    scales = {"no attention factor": 1.0}
    scales.update({name: spec.frequencies().attention_factor ** 2 for name, spec in specs.items()})
    L0 = next(iter(specs.values())).original_max_position_embeddings if specs else seq_len
    scales["ln L / ln L0"] = length_invariant_scale(seq_len, L0)
    return scales


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


__all__ = ["FrequencyReport", "PairArc", "Turns", "arc_points", "attention_to_first_keys", "decay_logit", "fit_logit", "fitted_logit",
           "length_invariant_scale", "logit_scales", "pair_arc", "softmax_entropy", "turns"]
