"""How a search's evaluations are shared among processes.

With ``torch.distributed`` initialised (``accelerate launch`` / ``torchrun``) every process holds a model replica.
For each round, process 0 broadcasts the job (the candidates still to read, what they must beat, how far to read);
every process evaluates its share, journaling each evaluation as it finishes, and process 0 gathers the records.
A process whose evaluation raises sends :class:`WorkFailed` instead, so process 0 ends the search naming it while
every process stays in step with the others' collectives. Alone, the same code runs with no collective at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..events import Event, Sink
from .config import SearchError
from .evaluator import Evaluator
from .journal import Journal, Record

READING_EVERY = 5.0  # seconds between a candidate's progress events


@dataclass(frozen=True)
class WorkFailed:
    """What a process sends back instead of its evaluations when they raised; process 0 then ends the search
    with an error naming it (every process stays in step with the others' collectives until then)."""

    rank: int
    error: str


class Workers:
    """This process's part in evaluating rounds: the driver's side (:meth:`round`) on process 0, :meth:`serve` on
    the others."""

    def __init__(self, comm: Any, evaluator: Evaluator, journal: Journal, sink: Sink,
                 stop: Callable[[], bool]) -> None:
        self.comm, self.evaluator, self.journal, self.sink, self.stop = comm, evaluator, journal, sink, stop

    def round(self, job: dict[str, Any]) -> list[Record]:
        """Process 0: every process evaluates its share of ``job``; the records of all of them."""
        job = self.comm.broadcast(job)
        failure: Exception | None = None
        try:
            mine: list[Record] | WorkFailed = self.work(job)
        except Exception as e:  # noqa: BLE001 - gather first: the other processes are waiting in it
            failure, mine = e, []
        parts = self.comm.gather(mine) or []
        if failure is not None:
            raise failure
        out = []
        for part in parts:
            if isinstance(part, WorkFailed):
                raise SearchError(f"process {part.rank} failed while evaluating: {part.error}; the search stops "
                                  f"(resume it with the same settings: every finished evaluation is journaled)")
            out += part or []
        return out

    def work(self, job: dict[str, Any]) -> list[Record]:
        """Evaluate this rank's share of a round (by the candidate's place in its batch, so a candidate stays
        with the process holding its KV cache), journaling each as it finishes."""
        if job["stop"]:
            return []
        out = []
        mine = [t for t in job["todo"] if t[0] % self.comm.world == self.comm.rank]
        t_round = time.time()
        for done, (_, genome, n_hat, key, before) in enumerate(mine, 1):
            if self.comm.rank == 0 and self.stop():
                break
            t0 = time.time()
            stop = self.stop if self.comm.rank == 0 else (lambda: False)
            got = self.evaluator.evaluate(job["space"], genome, n_hat, job["threshold"], key=key, to=job["to"],
                                          stop=stop, on_chunk=self._reading(job, done, len(mine), t0))
            if got is None:  # stopped mid-candidate: nothing journaled, a resume reads it again
                break
            spent = time.time() - t0 + got.seconds_before + (before.seconds if before is not None else 0.0)
            rec = Record(key, job["space"].cd, list(genome), n_hat, got.nll, got.complete, sum(got.reached),
                         job["stage"], job["generation"], spent, reached=got.reached, rung_loss=got.rung_loss,
                         raced=got.raced)
            self.journal.append(rec.journal_entry())
            out.append(rec)
            self.sink(Event("search.candidate", {
                "stage": job["stage"], "generation": job["generation"], "to": job["to"], "done": done,
                "of": len(mine), "loss": got.rung_loss[-1] if got.rung_loss and not got.complete else (
                    sum(got.nll) / len(got.nll) if got.nll else math.nan),
                "complete": got.complete, "raced": got.raced, "seconds": time.time() - t0,
                "left": (time.time() - t_round) / done * (len(mine) - done)}))
        return out

    def _reading(self, job: dict[str, Any], done: int, of: int, t0: float) -> Any:
        """A candidate's progress inside its documents, as ``search.reading`` events (at most one per
        ``READING_EVERY`` seconds: a long window takes minutes, a tiny one milliseconds)."""
        last = [t0]

        def report(read: int, goal: int) -> None:
            now = time.time()
            if now - last[0] >= READING_EVERY and read < goal:
                last[0] = now
                self.sink(Event("search.reading", {"stage": job["stage"], "generation": job["generation"],
                                                   "done": done - 1, "of": of, "read": read, "goal": goal,
                                                   "seconds": now - t0}))
        return report

    def serve(self) -> None:
        """Non-zero ranks: evaluate batches until rank 0 says the search is over. An evaluation that raises is
        reported to process 0 (which ends the search) and raised here once process 0 has said so."""
        failure: Exception | None = None
        while True:
            job = self.comm.broadcast(None)
            if job is None or job == "done":
                if failure is not None:
                    raise failure
                return
            try:
                mine: list[Record] | WorkFailed = self.work(job)
            except Exception as e:  # noqa: BLE001 - process 0 is waiting in the gather
                failure, mine = e, WorkFailed(self.comm.rank, f"{type(e).__name__}: {e}")
            self.comm.gather(mine)

    def finish(self) -> None:
        """Process 0: tell the other processes the search is over."""
        if self.comm.active:
            self.comm.broadcast("done")
