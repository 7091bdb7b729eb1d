"""Progress and results as events, so the library never needs to know who is watching.

Long work takes a ``sink`` (any callable accepting an :class:`Event`); widgets draw from it, the CLI
logs it, run folders store it as JSONL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
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
