"""A conversion or a training killed at any moment leaves no cache entry behind (SIGKILL, real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.cache import atomic_dir, cache_dir, clean_stale
from workbench.models import SMOLLM2_CACHE


def _kill_when(cmd: str, env: dict, ready, timeout: float = 240) -> None:
    """Start ``python -c cmd``; SIGKILL it as soon as ``ready()`` holds (checked every 0.2 s): the child is then
    inside the work, however fast or slow this machine is, so no waiting time decides the outcome."""
    proc = subprocess.Popen([sys.executable, "-c", cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    try:
        while not ready():
            assert proc.poll() is None, "the process finished before it could be interrupted"
            assert time.time() - t0 < timeout, "timed out waiting for the work to start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def _tmp_of(final: Path) -> list[Path]:
    return list(final.parent.glob(f".{final.name}.tmp-*"))


def test_killed_smollm2_conversion_leaves_no_cache(tmp_path):
    env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path)}
    final = tmp_path / SMOLLM2_CACHE
    _kill_when("from workbench.models import load_model; load_model('smollm2')", env, lambda: bool(_tmp_of(final)))
    assert not final.exists()
    assert _tmp_of(final)  # the killed process could not clean up ...
    assert clean_stale(final) and not _tmp_of(final)  # ... the next attempt does


def test_killed_teaching_training_leaves_no_cache(tmp_path):
    # a preset without shipped weights (the named ones ship), so the child has to train it into the cache;
    # reuse the immutable tokenizer and token caches so the child starts training at once
    from workbench.teaching import TOKENIZER_VERSION, teaching_tokenizer

    teaching_tokenizer(progress=False)
    for name in (f"teaching-tokenizer-{TOKENIZER_VERSION}", "tokens"):
        (tmp_path / name).symlink_to(cache_dir() / name)
    cfg = "replace(PRESETS['ci'], preset='ci-unshipped')"
    key = subprocess.run([sys.executable, "-c", f"from dataclasses import replace; from workbench.teaching import "
                          f"PRESETS; print({cfg}.key())"], capture_output=True, text=True, check=True).stdout.strip()
    final = tmp_path / f"teaching-ci-unshipped-{key}"
    env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path)}
    _kill_when("from dataclasses import replace; from workbench.teaching import PRESETS, ensure_teaching_model; "
               f"ensure_teaching_model({cfg}, progress=False)", env, lambda: bool(_tmp_of(final)))
    assert not final.exists()
    with atomic_dir(final) as tmp:  # the next attempt cleans the dead process's folder first
        assert not [p for p in _tmp_of(final) if p != tmp]
        (tmp / "x").write_text("ok")
    assert (final / "x").read_text() == "ok"


def test_clean_stale_keeps_live_processes(tmp_path):
    final = tmp_path / "entry"
    mine = tmp_path / f".entry.tmp-{os.getpid()}-abc"
    mine.mkdir()
    assert clean_stale(final) == [] and mine.exists()


@pytest.mark.parametrize("bad", ["nopid", "x-y"])
def test_clean_stale_ignores_foreign_names(tmp_path, bad):
    (tmp_path / f".entry.tmp-{bad}").mkdir()
    assert clean_stale(tmp_path / "entry") == []
