"""The held-out report of a search, window by window and resumable.

Every setting (the searched factors, the methods with their own attention factors, any other factor sets) is
read on held-out windows of one or more corpora, one window from each document (a play, a book) so the windows
are as different as the corpora allow. Each (window, setting) result is journaled as it comes, so a report of
many long forwards survives a kill and goes on where it stopped; a setting whose spec changed since (the best of
a search that went on) is read again, the others are kept.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..events import Event, Sink, null_sink
from ..rope import RopeSpec
from ..runs import RunFolder, RunFolderError
from .config import SearchError
from .report import compare_settings, document_of
from .results import HeldoutReport

JOURNAL = "windows.jsonl"


def heldout_windows(tokenizer: Any, corpora: list[str], length: int, per_corpus: int) -> list[Any]:
    """``per_corpus`` held-out windows of ``length`` tokens from each corpus, each from another document while
    there are enough long ones."""
    from ..data import samples

    return [w for corpus in corpora for w in samples(tokenizer, corpus, "heldout", length, per_corpus, progress=False)]


def window_key(window: Any) -> str:
    """A window's identity: its corpus, its label and a hash of its tokens (another tokenizer: another window)."""
    digest = hashlib.sha256(window.tokens.numpy().tobytes()).hexdigest()[:12]
    return f"{window.source}:{window.label}:{digest}"


def _journaled(path: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(window, setting, spec hash) -> result dict; a torn last line (a killed write) is passed over."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[(row["window"], row["setting"], row["spec_hash"])] = row
    return rows


def kept_forwards(folder: str | Path, specs: dict[str, RopeSpec]) -> int:
    """How many (window, setting) results a resumed report in ``folder`` keeps: its journal's lines whose setting
    still has the same spec (the windows are the report's own, checked when it resumes)."""
    hashes = {name: spec.spec_hash() for name, spec in specs.items()}
    return sum(hashes.get(setting) == digest for _, setting, digest in _journaled(Path(folder) / JOURNAL))


def heldout_settings(rows: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per setting, over the windows in order: perplexity over every token (the windows are equally long),
    the last quarter's (geometric mean over windows) and each window's perplexity."""
    out = {}
    for name in names:
        mine = [r for r in rows if r["setting"] == name]
        out[name] = {"ppl": math.exp(sum(r["nll"] for r in mine) / len(mine)),
                     "tail_ppl": math.exp(sum(math.log(r["tail_ppl"]) for r in mine) / len(mine)),
                     "per_document_ppl": [r["ppl"] for r in mine]}
    return out


def run_heldout(model: Any, windows: list[Any], specs: dict[str, RopeSpec], folder: str | Path, *,
                identity: dict[str, Any], resume: bool = False, dtype: str = "fp32", mode: str = "longrope",
                sink: Sink = null_sink, stop: Callable[[], bool] = lambda: False) -> HeldoutReport | None:
    """Read every window with every setting of ``specs`` (one of them named "searched") in ``folder``, then write
    and return the report (None: ``stop`` cut it short; what was read is kept for the next run with ``resume``).

    ``identity`` (model, length, corpora...) must match to resume a folder; the windows and specs are checked
    per journal line.

    Raises:
        SearchError: the folder holds another run, or this report made with other settings.
    """
    from ..evaluate import perplexity

    if "searched" not in specs:
        raise SearchError("the held-out report compares the setting named 'searched' with the others: give it")
    length = len(windows[0].tokens)
    try:
        run = RunFolder.open(folder, "heldout", identity, resume)
    except RunFolderError as e:
        raise SearchError(str(e)) from None
    journal = run.path / JOURNAL
    with run.hold("a held-out report"):
        done = _journaled(journal)
        groups = ([n for n in specs if n != "searched"], ["searched"])  # the setting most likely to change, last
        todo = [(w, n) for group in groups for w in windows for n in group
                if (window_key(w), n, specs[n].spec_hash()) not in done]
        sink(Event("heldout.start", {"windows": len(windows), "settings": list(specs), "forwards": len(todo),
                                     "kept": len(windows) * len(specs) - len(todo), "length": length}))
        for k, (w, name) in enumerate(todo):
            if stop():
                return None
            r = perplexity(model, [w], spec=specs[name], label=name, length=length, dtype=dtype, progress=False,
                           sink=sink)
            row = {"window": window_key(w), "corpus": w.source, "document": document_of(w), "setting": name,
                   "spec_hash": specs[name].spec_hash(), "nll": r.nll, "ppl": r.ppl, "tail_ppl": r.tail_ppl(),
                   "seconds": r.seconds, "per_position_nll": r.per_position_nll, "bucket_size": r.bucket_size}
            with journal.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            done[(row["window"], name, row["spec_hash"])] = row
            sink(Event("heldout.window", {"done": k + 1, "of": len(todo), "window": w.label, "setting": name,
                                          "ppl": r.ppl, "seconds": r.seconds}))
        rows = [done[(window_key(w), n, s.spec_hash())] for w in windows for n, s in specs.items()]
        settings = heldout_settings(rows, list(specs))
        report = HeldoutReport(length, mode, settings, documents=[w.label for w in windows],
                               source_documents=sorted({document_of(w) for w in windows}), wins={}, gain={},
                               corpora=[w.source for w in windows])
        compare_settings(report, windows)
        run.write("report", report)
        sink(Event("heldout.report", report.to_dict()))
        return report


__all__ = ["heldout_settings", "heldout_windows", "kept_forwards", "run_heldout", "window_key"]
