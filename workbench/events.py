"""Progress and results as events, so the library never needs to know who is watching.

Long work takes a ``sink`` (any callable accepting an :class:`Event`); widgets draw from it, the CLI,
the launcher and headless notebooks print it (:class:`ConsoleSink`), run folders store it as JSONL.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from itertools import pairwise
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str  # e.g. "ppl.document", "ppl.result", "search.generation"
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=jsonable)


def jsonable(x: Any) -> Any:
    """``json.dumps``'s ``default``: arrays and tensors as lists, objects with ``to_dict`` as dicts, else str."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "to_dict"):
        return x.to_dict()
    return str(x)


class FromDict:
    """For a result dataclass whose ``to_dict`` writes its fields: ``from_dict`` reads them back, leaving out the keys
    it does not know (a file from another version, or a derived value ``to_dict`` adds)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})


Sink = Callable[[Event], None]


def null_sink(event: Event) -> None:
    """Discard events."""


class ListSink:
    """Keep events in memory (thread-safe append)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of_kind(self, kind: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]


class JsonlSink:
    """Append each event as one JSON line (flushed, so a killed run keeps what it reported)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = event.to_json() + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


def read_events(path: str | Path) -> list[Event]:
    """Events of a JSONL file; a truncated last line (killed writer) is skipped."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append(Event(d["kind"], d.get("data", {}), d.get("time", 0.0)))
    return out


def fan_out(sinks: Iterable[Sink | None]) -> Sink:
    """One sink that forwards to several."""
    active = [s for s in sinks if s is not None]

    def sink(event: Event) -> None:
        for s in active:
            s(event)

    return sink


def duration(seconds: float) -> str:
    """``"2 h 05 min"``, ``"2 min 05 s"`` or ``"42 s"``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class ConsoleSink:
    """An event sink that prints progress as plain lines: the one text form of events, used by the CLI, the
    launcher and headless notebooks (readable in a terminal and in papermill's log).

    Lines: a few per forward (by layer, or by token batch for llama.cpp) and one per document of a perplexity
    run (with the time left when ``forwards``, the number of forwards the run makes, is given), one per search
    generation, every ``train_every``-th training step (and the first), the start and end of each progressive
    stage, the start of a held-out report. Inside a progressive run the search and training lines are indented
    under their stage. Other events print nothing.

    Args:
        stream: where lines go (default: ``sys.stdout`` as it is when the sink is made); or
        write: a function taking each line instead (e.g. a logger's, or one adding a prefix).
        every: print layer progress at these fractions of a forward.
    """

    def __init__(self, stream: Any = None, every: float = 0.25, forwards: int | None = None, *,
                 train_every: int = 10, write: Callable[[str], None] | None = None) -> None:
        out = stream or sys.stdout
        self.write = write or (lambda line: print(line, file=out, flush=True))
        self.every, self.forwards, self.train_every = every, forwards, train_every
        self.t0 = time.time()
        self.done = 0  # forwards completed
        self._batch_steps: dict[tuple[Any, ...], int] = {}  # per window read in batches: the last step printed
        self.indent = ""  # "    " once a progressive stage has started

    def __call__(self, event: Event) -> None:
        line = self.format(event)
        if line is not None:
            self.write(line)

    def format(self, event: Event) -> str | None:
        """The line for ``event``, or None when it prints nothing."""
        formatter = getattr(self, "_" + event.kind.replace(".", "_"), None)
        return formatter(event.data) if formatter is not None else None

    def _clock(self) -> str:
        return f"[{time.time() - self.t0:6.0f}s]"

    def _eta(self, fraction_of_current: float | None) -> str:
        """During a forward (``fraction_of_current`` of it read): which forward and the time left; after one
        (``None``): how many forwards are done and the time left."""
        if not self.forwards:
            return ""
        if fraction_of_current is None:
            here = f"; {min(self.done, self.forwards)} of {self.forwards} forwards done"
            fraction_of_current = 0.0
        else:
            here = f"; forward {min(self.done + 1, self.forwards)}/{self.forwards}"
        progress = (self.done + fraction_of_current) / self.forwards
        if progress <= 0 or progress >= 1:
            return here
        left = (time.time() - self.t0) * (1 - progress) / progress
        return f"{here}, about {duration(left)} left"

    def _ppl_layer(self, d: dict[str, Any]) -> str | None:
        step = max(1, round(d["layers"] * self.every)) if d["layers"] else 0
        if not step or d["layer"] % step or d["layer"] >= d["layers"]:
            return None
        return (f"{self._clock()} {d['label']:>12} @ {d['length']:>6} tokens: document {d['index'] + 1}/{d['of']}, "
                f"layer {d['layer']}/{d['layers']}{self._eta(d['layer'] / d['layers'])}")

    def _ppl_batch(self, d: dict[str, Any]) -> str | None:
        """An engine that reads a window in token batches (llama.cpp): a line at each ``every`` of the window."""
        read = d["tokens"] / d["total"] if d["total"] else 1.0
        step, key = int(read / self.every + 1e-9), (d["label"], d["length"], d["index"])
        if read >= 1 or step <= self._batch_steps.get(key, 0):
            return None
        self._batch_steps[key] = step
        return (f"{self._clock()} {d['label']:>12} @ {d['length']:>6} tokens: document {d['index'] + 1}/{d['of']}, "
                f"{d['tokens']:,} of {d['total']:,} tokens read{self._eta(read)}")

    def _heldout_start(self, d: dict[str, Any]) -> str:
        self.forwards, self.done, self.t0 = d["forwards"] or None, 0, time.time()
        return (f"held-out report: {d['windows']} windows of {d['length']:,} tokens x {len(d['settings'])} settings "
                f"({', '.join(d['settings'])}): {d['forwards']} forwards to run, {d['kept']} kept from its journal")

    def _ppl_document(self, d: dict[str, Any]) -> str:
        self.done += 1
        ppl = f"PPL {d['ppl']:.2f}" if math.isfinite(d["ppl"]) else "perplexity not finite"
        return (f"{self._clock()} {d['label']:>12} @ {d['length']:>6} tokens: document {d['index'] + 1}/{d['of']} "
                f"{ppl} ({d['document']}){self._eta(None)}")

    def _trial(self, what: str, d: dict[str, Any]) -> str:
        self.done += 1
        answer = "right" if d.get("correct") else "wrong"
        return f"{self._clock()} {d['label']:>12} {what} @ {d['length']:>6} tokens: {answer}{self._eta(None)}"

    def _passkey_trial(self, d: dict[str, Any]) -> str:
        return self._trial("passkey", d)

    def _needle_trial(self, d: dict[str, Any]) -> str:
        self.done += 1  # the answer and its teacher-forced NLL: two forwards
        return self._trial(f"needle at depth {d['depth']:.2f}", d)

    def _needle_document(self, d: dict[str, Any]) -> str:
        self.done += 1
        return (f"{self._clock()} {d['label']:>12} needle document {d['index'] + 1}/{d['of']}: answer NLL "
                f"{d['nll']:.3f}{self._eta(None)}")

    def _entropy_layer(self, d: dict[str, Any]) -> str:
        return f"{self._clock()} {d['label']:>12} entropy: layer {d['layer']} read ({len(d.get('layers') or [])} probed)"

    def _search_start(self, d: dict[str, Any]) -> None:
        """Remembers the number of generations, for the time left after each; prints nothing."""
        self.search_total, self.search_marks, self.search_seconds = d.get("config", {}).get("generations"), [], []

    def _search_generation(self, d: dict[str, Any]) -> str:
        total = getattr(self, "search_total", None)
        marks = getattr(self, "search_marks", [])
        marks.append(time.time())
        seconds = getattr(self, "search_seconds", [])
        if d.get("seconds") and d["generation"] > 0:  # the evaluations' own time (a replayed one's as journaled)
            seconds.append(d["seconds"])
        line = f"{self.indent}generation {d['generation']:>3}{f'/{total}' if total else ''}: best PPL {d['best']:.4f}"
        if "median" in d:
            line += f", median {d['median']:.4f}"
        if "evaluated" in d:
            line += f", {d['evaluated']} evaluated ({d.get('stopped_early', 0)} stopped early)"
        if "tokens_total" in d:
            line += f", {d['tokens_total']:,} token-forwards"
        recent = seconds[-3:] if "seconds" in d else [b - a for a, b in pairwise(marks[-4:])]
        if total and d["generation"] < total and recent:  # the last few generations' pace
            line += f"; about {duration(sum(recent) / len(recent) * (total - d['generation']))} left"
        return line

    def _search_candidate(self, d: dict[str, Any]) -> str:
        where = "init" if d["stage"] == "init" else f"gen {d['generation']}" if d["stage"] == "generation" else d["stage"]
        what = "stopped by racing" if d["raced"] else f"loss {d['loss']:.4f}"
        left = f", about {duration(d['left'])} left in this round" if d["done"] < d["of"] else ""
        return (f"{self.indent}{self._clock()} {where}: candidate {d['done']}/{d['of']} read to {d['to']} tokens, "
                f"{what} ({duration(d['seconds'])}){left}")

    def _search_reading(self, d: dict[str, Any]) -> str:
        where = "init" if d["stage"] == "init" else f"gen {d['generation']}" if d["stage"] == "generation" else d["stage"]
        left = d["seconds"] * (d["goal"] - d["read"]) / max(d["read"], 1)
        return (f"{self.indent}{self._clock()} {where}: candidate {d['done'] + 1}/{d['of']} at {d['read']:,} of "
                f"{d['goal']:,} tokens ({duration(d['seconds'])}, about {duration(left)} left for it)")

    def _search_rung(self, d: dict[str, Any]) -> str:
        return (f"{self.indent}{self._clock()} rung {d['rung'] + 1} ({d['tokens']} tokens): {d['kept']} "
                f"candidates go on")

    def _search_warning(self, d: dict[str, Any]) -> str:
        return f"{self.indent}warning: {d.get('message', d)}"

    def _search_n_hat(self, d: dict[str, Any]) -> str:
        if "best_n_hat" in d and "best" in d:
            return f"{self.indent}n_hat stage: best n_hat {d['best_n_hat']}, fitness {d['best']:.4f}"
        return f"{self.indent}n_hat: {d}"

    def _train_step(self, d: dict[str, Any]) -> str | None:
        if d["step"] != 1 and d["step"] % self.train_every:
            return None
        lr = f", lr {d['lr']:.2e}" if "lr" in d else ""
        return f"{self.indent}step {d['step']}: loss {d['loss']:.4f}{lr}"

    def _progressive_start(self, d: dict[str, Any]) -> str:
        self.indent = "    "
        return f"stage {d['stage']} ..."

    def _progressive_stage(self, d: dict[str, Any]) -> str:
        return f"[{d['seconds']:5.0f}s] stage {d['stage']} done"
