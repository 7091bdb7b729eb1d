"""The search's journal: every finished evaluation appended as it completes (one file per process), so a
resumed search replays them instead of recomputing and ends exactly where an uninterrupted one would."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import SearchError
from .ga import Genome


@dataclass
class Record:
    """One evaluation: per-document losses (all of them, or the first few if racing stopped it).

    ``nll[d]`` is document d's mean loss over the predictions read so far and ``reached[d]`` how many of its
    tokens were read (None: whole documents, as journals before reading by position wrote). ``rung_loss[i]``
    is the mean loss over every document's first ``rungs[i]`` tokens, for the multi-fidelity search; a
    candidate continued to the next rung is journaled again with more of both.
    """

    key: str
    cd: int | None
    genome: list[int]
    n_hat: int
    nll: list[float]
    complete: bool
    tokens: int
    stage: str  # "init", "generation", "n_hat"
    generation: int
    seconds: float = 0.0
    replayed: bool = False
    reached: list[int] | None = None
    rung_loss: list[float] = field(default_factory=list)
    raced: bool = False  # racing stopped it: it cannot beat what it had to

    @property
    def fitness(self) -> float:
        """exp(mean per-document loss), inf if racing stopped it."""
        return math.exp(sum(self.nll) / len(self.nll)) if self.complete and self.nll else math.inf

    @property
    def progress(self) -> tuple[bool, int, int]:
        """Orders the journal lines of one candidate: the most advanced one is what it reached."""
        return self.complete, len(self.rung_loss), self.tokens

    def journal_entry(self) -> dict[str, Any]:
        return {"kind": "eval", **{k: v for k, v in asdict(self).items() if k != "replayed"}}


def candidate_key(cd: int | None, genome: Genome, n_hat: int) -> str:
    return f"{cd if cd is not None else '-'}|{n_hat}|" + ",".join(map(str, genome))


class JournalError(SearchError):
    """A journal line was changed after it was written, or is not a journal entry: resuming from it is refused."""


def _line_checksum(entry: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class JournalContents:
    """What a run folder's journals hold: evaluations by key, the generations already journaled, and notes."""

    records: dict[str, Record]
    generations: set[tuple[int | None, int]]
    warnings: list[str]

    @property
    def settled(self) -> int:
        """Evaluations a resumed search replays instead of running: read to the end, or stopped by racing."""
        return sum(r.complete or r.raced for r in self.records.values())


class Journal:
    """Append-only JSONL of finished evaluations (one file per rank) plus generation summaries.

    Every line carries a checksum of its content, so a line edited by hand (or damaged on disk) is refused on
    resume rather than trusted. It catches edits and damage, not a forger who recomputes the checksum.
    A line torn by a killed write can only be the last one: reading cuts it off, so the next append starts on
    a clean line.
    """

    def __init__(self, folder: Path, rank: int = 0) -> None:
        self.folder = folder
        self.path = folder / f"journal-{rank}.jsonl"

    def append(self, entry: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({**entry, "sha": _line_checksum(entry)}) + "\n")
            f.flush()

    @staticmethod
    def read(folder: Path, repair: bool = True) -> JournalContents:
        """Every rank's journal; a torn last line is cut off (with a warning), anything else wrong is refused.

        ``repair=False`` only reads (a torn last line is passed over, the file left as it is): for looking into
        the journal of a search that may be running.

        Raises:
            JournalError: a line that is not JSON before the last, a line that is not a journal entry, or a
                line whose checksum does not match its content.
        """
        out = JournalContents({}, set(), [])
        for path in sorted(Path(folder).glob("journal-*.jsonl")):
            Journal._read_file(path, out, repair)
        return out

    @staticmethod
    def _read_file(path: Path, out: JournalContents, repair: bool = True) -> None:
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        good = 0  # characters of whole, valid lines
        for i, raw in enumerate(lines, 1):
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                if i < len(lines):
                    raise JournalError(f"{path} line {i} is not JSON, and it is not the last line, so it is not a "
                                       "torn write: the journal is damaged; start a new run folder") from None
                if not repair:
                    return
                path.write_text(text[:good], encoding="utf-8")
                out.warnings.append(f"{path.name} line {i} was torn by a killed write; cut it off and kept the "
                                    f"{len(out.records)} evaluations before it")
                return
            Journal._check(path, i, entry)
            if entry["kind"] == "eval":
                entry.pop("kind")
                try:
                    rec = Record(**entry, replayed=True)
                except TypeError as e:
                    raise JournalError(f"{path} line {i} is not an evaluation record ({e})") from None
                old = out.records.get(rec.key)
                if old is None or rec.progress >= old.progress:  # a continued candidate is journaled again
                    out.records[rec.key] = rec
            else:
                out.generations.add((entry.get("critical_dim"), entry.get("generation")))
            good += len(raw)
        if repair and text and not text.endswith("\n"):  # a whole last line without its newline: the next append needs one
            with path.open("a", encoding="utf-8") as f:
                f.write("\n")

    @staticmethod
    def _check(path: Path, i: int, entry: Any) -> None:
        if not isinstance(entry, dict) or entry.get("kind") not in ("eval", "generation"):
            raise JournalError(f"{path} line {i} is not a journal entry (an object whose kind is eval or generation)")
        sha = entry.pop("sha", None)
        if sha != _line_checksum(entry):
            raise JournalError(f"{path} line {i} was changed after it was written (its checksum does not match): "
                               "refusing to resume from it; start a new run folder or restore the journal")
