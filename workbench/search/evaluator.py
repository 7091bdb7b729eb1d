"""What one candidate costs and scores: its documents read chunk by chunk, judged on the way, paused at rungs.

Every fitness document is read through a KV cache (:class:`~workbench.evaluate.engine.NLLStream`) with the
candidate's frequencies pinned to the full window, so a prefix's losses are exactly the first part of the
window's. That gives two savings:

- racing by position: after every chunk the candidate's losses so far are held against what it must beat
  (:mod:`.racing`); a candidate that cannot win stops there, mid-document;
- multi-fidelity (``SearchConfig.rungs``): a candidate is read to a prefix, ranked against its batch, and only
  the better part is continued, from its KV cache when it is still held (``cache_bytes``), else read again
  from the first token (chunk boundaries include the rungs, so both give the same numbers).

A candidate being read is also saved to the run folder (``partial-<process>.pt``: its losses and KV caches)
every ``checkpoint_every`` seconds and when it is stopped or interrupted, so a search killed in the middle of a
32k window goes on from the last save instead of the window's first token; the file goes once the candidate is
finished.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..evaluate.engine import NLLStream
from ..patch import patch
from ..rope import RopeSpec
from .config import SearchConfig
from .ga import Genome, Space
from .racing import Threshold, hopeless

DEFAULT_CACHE_BYTES = 4 << 30  # paused candidates' KV caches held between rungs; beyond, the worst are dropped
CHECKPOINT_EVERY = 180.0  # seconds of reading between saves of the candidate being read
SAVE_SHARE = 30  # ... and at least 30 times as long as the last save took (1 GB took 1-10 s on a busy 2-core CPU)


@dataclass
class Outcome:
    """What reading a candidate gave: per-document mean losses and tokens read (documents started), the loss at
    every rung all documents reached, whether it is complete, and whether racing stopped it (it cannot win)."""

    nll: list[float]
    reached: list[int]
    rung_loss: list[float]
    complete: bool
    raced: bool
    seconds_before: float = 0.0  # spent on it by an earlier process, up to the save it went on from


class _Saves:
    """The saves of one candidate being read (``path`` None: not saved): every ``every`` seconds of reading, or
    ``SAVE_SHARE`` times as long as the last save took, whichever is longer; written whole, then renamed, so a
    kill mid-write leaves the last save."""

    def __init__(self, path: Path | None, every: float, key: str | None, spec: RopeSpec,
                 streams: list[NLLStream]) -> None:
        self.path, self.every, self.key, self.spec, self.streams = path, every, key, spec, streams
        self.earlier = 0.0  # seconds spent on the candidate before the save it went on from
        self.t0 = self.last = time.time()
        self.took = 0.0  # the last save's seconds
        self.ours = False  # the file holds this candidate (written or gone on from here)

    def when_due(self) -> None:
        if self.path is not None and time.time() - self.last >= max(self.every, SAVE_SHARE * self.took):
            t = time.time()
            self.write()
            self.last = time.time()
            self.took = self.last - t

    def write(self) -> None:
        if self.path is None or not any(s.reached for s in self.streams):  # nothing read yet: nothing to save
            return
        part = self.path.with_suffix(".tmp")
        torch.save({"key": self.key, "spec": self.spec.spec_hash(), "seconds": self.earlier + time.time() - self.t0,
                    "streams": [s.state() for s in self.streams]}, part)
        os.replace(part, self.path)
        self.ours = True

    def finished(self) -> None:
        """The candidate needs no save any more: its file goes (another candidate's stays)."""
        if self.path is not None and (self.ours or self.earlier > 0):
            self.path.unlink(missing_ok=True)


class Evaluator:
    """Turns a genome into a spec (through the target) and reads its documents, racing and pausing."""

    def __init__(self, model: Any, docs: list[Any], target: Any, config: SearchConfig,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, checkpoint: str | Path | None = None,
                 checkpoint_every: float = CHECKPOINT_EVERY) -> None:
        self.model, self.docs, self.target, self.cfg = model, docs, target, config
        self.needles = target.needles  # needle-driven: only the answer's tokens count
        self.cache_bytes = cache_bytes
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every = checkpoint_every
        self.paused: dict[str, tuple[list[NLLStream], float]] = {}  # key -> streams, loss at the last rung
        self.forwarded = 0  # tokens this process forwarded, restarts after a resume or a dropped cache included

    def spec(self, space: Space, genome: Genome, n_hat: int) -> RopeSpec:
        return self.target.spec(space.factors(genome), n_hat, space.cd)

    def _streams(self, key: str | None) -> list[NLLStream]:
        held = self.paused.pop(key, None) if key is not None else None
        if held is not None:
            return held[0]
        return [NLLStream(self.model, doc.tokens, dtype=self.cfg.dtype, chunk_tokens=self.cfg.chunk_tokens,
                          stops=self.cfg.rungs) for doc in self.docs]

    def _counted(self, doc: Any) -> int:
        """Predictions a document counts when complete."""
        return doc.answer_len if self.needles else len(doc.tokens) - 1

    def _doc_loss(self, doc: Any, stream: NLLStream) -> float | None:
        """Mean loss over what counts of a document read so far (needles: only once read to the end)."""
        nll = stream.nll
        if self.needles:
            if not stream.done:
                return None
            start = doc.answer_start - 1
            return float(nll[start:start + doc.answer_len].mean())
        return float(nll.mean()) if len(nll) else None

    def _contributions(self, streams: list[NLLStream]) -> list[float]:
        """Each started document's summed losses over the predictions it counts when complete (racing's input)."""
        out = []
        for doc, stream in zip(self.docs, streams, strict=True):
            if stream.reached == 0:
                break
            loss = self._doc_loss(doc, stream)
            if loss is None:  # a needle document not read to its answer yet: nothing counted, nothing known
                out.append(0.0)
            elif self.needles:
                out.append(loss)
            else:
                out.append(float(stream.nll.sum()) / self._counted(doc))
        return out

    def evaluate(self, space: Space, genome: Genome, n_hat: int, threshold: Threshold | None, *,
                 key: str | None = None, to: int | None = None, stop: Callable[[], bool] = lambda: False,
                 on_chunk: Callable[[int, int], None] | None = None) -> Outcome | None:
        """Read every document to ``to`` tokens (default: whole), stopping once racing says it cannot win.

        ``on_chunk(read, goal)`` is told the tokens read so far (all documents) after every chunk.
        Returns None when ``stop()`` ended the reading (nothing to journal: the candidate is read again on resume).
        """
        length = self.cfg.target_length
        goal = length if to is None else min(to, length)
        spec = self.spec(space, genome, n_hat)
        streams = self._streams(key)
        saves = _Saves(self.checkpoint if key is not None else None, self.checkpoint_every, key, spec, streams)
        if saves.path is not None and not any(s.reached for s in streams):
            saves.earlier = self._restore(key, spec, streams)
        before = sum(s.forwarded for s in streams)
        state = {"raced": False, "stopped": False}

        def judge(_: NLLStream) -> bool:
            if on_chunk is not None:
                on_chunk(sum(min(s.reached, goal) for s in streams), goal * len(streams))
            if hopeless(self._contributions(streams), threshold):
                state["raced"] = True
            elif stop():
                state["stopped"] = True
            else:
                saves.when_due()
            return state["raced"] or state["stopped"]

        try:
            with patch(self.model, spec, length=length):
                for stream in streams:
                    want = stream.n if self.needles else goal
                    if stream.reached < want:
                        stream.advance(want, after_chunk=judge)
                    if state["raced"] or state["stopped"]:
                        break
        except KeyboardInterrupt:
            saves.write()
            raise
        self.forwarded += sum(s.forwarded for s in streams) - before
        if state["stopped"]:
            saves.write()
            for s in streams:
                s.release()
            return None
        outcome = self._outcome(streams, state["raced"])
        outcome.seconds_before = saves.earlier
        if outcome.complete or outcome.raced:
            saves.finished()
        if key is not None and not outcome.complete and not outcome.raced:
            self._pause(key, streams, outcome.rung_loss[-1] if outcome.rung_loss else math.inf)
        else:
            for s in streams:
                s.release()
        return outcome

    def _restore(self, key: str, spec: RopeSpec, streams: list[NLLStream]) -> float:
        """Go on from the saved candidate when it is this one (same key, spec and documents); the seconds spent
        on it before, or 0.0 (and nothing restored)."""
        if not self.checkpoint.is_file():
            return 0.0
        try:
            saved = torch.load(self.checkpoint, weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged save is read again from the first token
            return 0.0
        if saved.get("key") != key or saved.get("spec") != spec.spec_hash() or len(saved["streams"]) != len(streams):
            return 0.0
        for k, (stream, state) in enumerate(zip(streams, saved["streams"], strict=True)):
            if not stream.restore(state):
                for s in streams[:k]:
                    s.release()
                return 0.0
        return float(saved["seconds"])

    def _outcome(self, streams: list[NLLStream], raced: bool) -> Outcome:
        started = [(d, s) for d, s in zip(self.docs, streams, strict=True) if s.reached > 0]
        losses = [self._doc_loss(d, s) for d, s in started]
        nll = [x for x in losses if x is not None]
        reached = [s.reached for _, s in started]
        low = min((s.reached for s in streams), default=0)
        rung_loss = []
        for r in self.cfg.rungs:
            if r > low or self.needles:
                break
            rung_loss.append(sum(float(s.nll[:min(r, s.n - 1)].mean()) for s in streams) / len(streams))
        complete = all(s.done for s in streams) and len(nll) == len(self.docs)
        return Outcome(nll, reached, rung_loss, complete, raced and not complete)

    def _pause(self, key: str, streams: list[NLLStream], loss: float) -> None:
        """Hold a candidate's KV caches for its next rung; beyond the budget, drop the worst held (the least
        likely to be continued; one dropped is read again from its first token if it is)."""
        self.paused[key] = (streams, loss)
        while len(self.paused) > 1 and sum(s.cache_bytes for held, _ in self.paused.values() for s in held) > \
                self.cache_bytes:
            worst = max(self.paused, key=lambda k: self.paused[k][1])
            for s in self.paused.pop(worst)[0]:
                s.release()

    def forget(self, keep: set[str]) -> None:
        """Drop the paused candidates not in ``keep`` (those a rung did not keep)."""
        for key in [k for k in self.paused if k not in keep]:
            for s in self.paused.pop(key)[0]:
                s.release()


def rung_survivors(keys: list[str], rung_loss: dict[str, list[float]], rung: int, keep: float) -> list[str]:
    """The candidates a rung continues: of those that reached it (not stopped by racing), the best
    ``ceil(keep * n)`` (at least one) by their loss at the rung, ties to the earlier; in batch order."""
    arrived = [k for k in keys if len(rung_loss.get(k, ())) > rung]
    if not arrived:
        return []
    n = max(1, math.ceil(keep * len(arrived) - 1e-9))
    best = set(sorted(arrived, key=lambda k: (rung_loss[k][rung], keys.index(k)))[:n])
    return [k for k in keys if k in best]
