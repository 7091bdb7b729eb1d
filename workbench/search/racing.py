"""Racing: a candidate is read chunk by chunk and stopped once it cannot enter the parent set.

A candidate must beat a threshold (the worst parent's per-document losses; in the n_hat stage, the best
so far). Two rules decide when it cannot:

- exact (the default): its losses so far already exceed the threshold's whole loss. A token's loss (a
  negative log-likelihood) is never below 0, so whatever its remaining tokens and documents give, its total
  can only grow: the candidate would not have entered, and a racing search ends with the plain algorithm's
  result. A document read to a prefix counts as the sum of its losses so far over all the predictions it
  will have (its share of the document mean, a lower bound on it), so the rule acts at token granularity.
- heuristic: each remaining document is assumed to reach no lower than the best loss any complete
  candidate reached on it so far (``floor``). That is a guess, not a bound: a candidate at [4.1, 2.0, 2.0]
  against parents at [3, 3, 3] with a floor of 2.5 is dropped though it would have become a parent. It
  saves more forwards, but a heuristic racing search may end elsewhere than the plain algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

from .journal import Record


@dataclass
class Threshold:
    """What a candidate must beat: per-document losses; ``floor`` only for the heuristic rule."""

    nll: list[float]  # per document
    floor: list[float] | None = None  # heuristic: best loss any complete candidate reached on each document


def hopeless(partial: list[float], threshold: Threshold | None) -> bool:
    """True when the candidate with losses ``partial`` on the first documents cannot beat ``threshold``.

    ``partial[d]``: document d's loss so far, its summed token losses over every prediction it counts when
    complete (for a whole document, its mean loss).

    Exact rule (no floor): the partial sum already exceeds the threshold's total; the candidate's total, a
    sum of the same losses in the same order plus non-negative ones, can only be larger, so its fitness is
    not better. Heuristic rule: the same with each remaining document at its floor.
    """
    if threshold is None:
        return False
    if threshold.floor is None:
        return sum(partial) > sum(threshold.nll)
    k = len(partial)
    deficit = sum(partial) - sum(threshold.nll[:k])
    slack = sum(t - f for t, f in zip(threshold.nll[k:], threshold.floor[k:], strict=True))
    return deficit > slack


def floor(records: list[Record], n_docs: int) -> list[float]:
    """The heuristic floor: the best loss any complete record reached on each document (0 when none is complete)."""
    complete = [r.nll for r in records if r.complete]
    return [min(r[j] for r in complete) for j in range(n_docs)] if complete else [0.0] * n_docs


def threshold(mode: str, target: Record, records: list[Record], n_docs: int) -> Threshold | None:
    """The threshold racing ``mode`` ("exact", "heuristic", "off") sets for beating ``target``."""
    if mode == "off":
        return None
    return Threshold(list(target.nll), floor(records, n_docs) if mode == "heuristic" else None)
