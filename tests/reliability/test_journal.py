"""A search journal is trusted only as far as it checks out: an edited line, a line that is not an entry or
damage before the last line is refused with a clear message; a torn last line is cut off."""

from __future__ import annotations

import json

import pytest

from workbench.search import Journal, JournalError, SearchConfig, run_search

from .conftest import TINY_SEARCH as TINY


def _copy(finished_search, tmp_path):
    import shutil

    shutil.copytree(finished_search, tmp_path / "run")
    return tmp_path / "run", (tmp_path / "run" / "journal-0.jsonl")


def test_an_edited_loss_is_refused(teaching_ci, finished_search, tmp_path):
    folder, journal = _copy(finished_search, tmp_path)
    lines = journal.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["nll"] = [0.01 for _ in entry["nll"]]  # "best PPL 1.01"
    lines[1] = json.dumps(entry)
    journal.write_text("\n".join(lines) + "\n")
    with pytest.raises(JournalError, match="line 2 was changed after it was written"):
        Journal.read(folder)
    lm = teaching_ci
    with pytest.raises(JournalError, match="changed after it was written"):
        run_search(lm.model, lm.tokenizer, SearchConfig(**TINY), folder, resume=True, report=False)


@pytest.mark.parametrize("bad, words", [("[1, 2, 3]", "is not a journal entry"), ('{"kind": "eval"}', "was changed"),
                                         ("{not json", "is not JSON, and it is not the last line")])
def test_malformed_lines_before_the_end_are_refused(finished_search, tmp_path, bad, words):
    folder, journal = _copy(finished_search, tmp_path)
    lines = journal.read_text().splitlines()
    lines.insert(1, bad)
    journal.write_text("\n".join(lines) + "\n")
    with pytest.raises(JournalError, match=words):
        Journal.read(folder)


def test_a_whole_last_line_without_its_newline_gets_one(finished_search, tmp_path):
    folder, journal = _copy(finished_search, tmp_path)
    text = journal.read_text()
    journal.write_text(text.rstrip("\n"))
    contents = Journal.read(folder)
    assert journal.read_text() == text and not contents.warnings
