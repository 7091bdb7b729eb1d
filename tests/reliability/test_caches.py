"""Cache entries: a broken entry is replaced, builders take turns, killed builders' leftovers go, damaged
weights are noticed (real processes and real file damage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import workbench.models as models
from workbench.cache import cached_entry, damaged_files, file_record


def _build(tmp, text="built"):
    (tmp / "data.txt").write_text(text)
    (tmp / "done.json").write_text("{}")


def test_an_entry_without_its_completion_marker_is_rebuilt_and_replaced(tmp_path):
    final = tmp_path / "entry"
    final.mkdir()
    (final / "data.txt").write_text("half-written")  # a builder died before writing done.json
    assert cached_entry(final, "done.json", _build, "building") == final
    assert (final / "data.txt").read_text() == "built" and (final / "done.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".entry.lock") == ["entry"]  # nothing left over


def test_a_complete_entry_is_used_as_is_and_dead_builders_leftovers_are_removed(tmp_path):
    final = tmp_path / "entry"
    cached_entry(final, "done.json", _build, "building")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".entry.tmp-{dead.stdout.strip()}-abc"
    leftover.mkdir()
    calls = []
    assert cached_entry(final, "done.json", lambda tmp: calls.append(tmp), "building") == final
    assert calls == [] and not leftover.exists()


def test_two_processes_build_an_entry_once_and_the_second_says_who_it_waits_for(tmp_path):
    # the first builder holds the lock until the second has said that it waits: no timing decides the outcome
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from workbench.cache import cached_entry
        log, release = Path({str(tmp_path / "builds.log")!r}), Path({str(tmp_path / "release")!r})
        def build(tmp):
            with open(log, "a") as f:
                f.write("build\\n")
            while not release.exists():
                time.sleep(0.05)
            (tmp / "done.json").write_text("{{}}")
        cached_entry(Path({str(tmp_path / "entry")!r}), "done.json", build, "building the test entry")
    """)
    first = subprocess.Popen([sys.executable, "-u", "-c", script], stdout=subprocess.PIPE, text=True)
    while not (tmp_path / "builds.log").exists():  # the first one holds the lock and builds
        assert first.poll() is None
    second = subprocess.Popen([sys.executable, "-u", "-c", script], stdout=subprocess.PIPE, text=True)
    said = second.stdout.readline()  # blocks until the second process reports that it waits
    (tmp_path / "release").touch()
    first.wait(60), second.wait(60)
    assert first.returncode == 0 and second.returncode == 0
    assert (tmp_path / "builds.log").read_text() == "build\n"
    assert f"waiting for process {first.pid}" in said and "building the test entry" in said


def test_damaged_files_notices_truncation_and_flipped_bytes(tmp_path):
    (tmp_path / "w.bin").write_bytes(bytes(range(256)) * 64)
    record = file_record(tmp_path, ("w.bin",))
    assert damaged_files(tmp_path, record) == []
    data = bytearray((tmp_path / "w.bin").read_bytes())
    data[100] ^= 0x01
    (tmp_path / "w.bin").write_bytes(bytes(data))
    os.utime(tmp_path / "w.bin", (1, 1))  # a new mtime: the hash is checked again
    assert damaged_files(tmp_path, record) == ["w.bin"]
    (tmp_path / "w.bin").write_bytes(bytes(data[:1000]))
    assert damaged_files(tmp_path, record) == ["w.bin"]


def test_damaged_cached_smollm2_weights_are_converted_again(tmp_path, monkeypatch):
    builds = []

    def fake_convert(tmp, log):  # the real conversion takes ~15 s; the cache logic is what is tested
        builds.append(tmp)
        for name in models.SMOLLM2_FILES:
            (tmp / name).write_text(f"{name} #{len(builds)}")
        (tmp / "workbench.json").write_text(json.dumps({"files": file_record(tmp, models.SMOLLM2_FILES)}))

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_convert_smollm2", fake_convert)
    messages = []
    folder = models.smollm2_folder(messages.append)
    assert len(builds) == 1 and models.smollm2_folder(messages.append) == folder and len(builds) == 1
    (folder / "model.safetensors").write_text("model.safetensors #X")  # same size, other bytes
    models.smollm2_folder(messages.append)
    assert len(builds) == 2 and (folder / "model.safetensors").read_text() == "model.safetensors #2"
    assert any("is damaged (model.safetensors differ" in m for m in messages)


@pytest.mark.parametrize("marker", ["index.json"])
def test_a_token_cache_without_its_index_is_rebuilt(tmp_path, monkeypatch, marker):
    from workbench import data
    from workbench.models import load_tokenizer

    tokenizer = load_tokenizer("tiny-random")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    data._TOKENIZED.clear()
    corpus = data.tokenized(tokenizer, "bible", progress=False)
    folder = tmp_path / "tokens" / f"bible-{data.tokenizer_id(tokenizer)}"
    (folder / marker).unlink()
    data._TOKENIZED.clear()
    again = data.tokenized(tokenizer, "bible", progress=False)
    assert (folder / marker).exists() and again.names == corpus.names
    data._TOKENIZED.clear()
