"""Real processes: a search killed with SIGKILL and resumed ends exactly like an uninterrupted run;
two processes under accelerate launch give the same result as one."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.search import Journal

ARGS = ["--model", "teaching-ci", "--target-length", "512", "--documents", "3", "--population", "10",
        "--parents", "5", "--mutants", "3", "--crossovers", "3", "--generations", "5", "--report-documents", "3",
        "--threads", "1"]


def _search(run_dir: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", "search", *ARGS, "--run-dir", str(run_dir), *extra],
                          capture_output=True, text=True, env=env, timeout=600)


def _evals(folder: Path) -> int:
    return sum(line.count('"kind": "eval"') for p in folder.glob("journal-*.jsonl") for line in p.read_text().splitlines())


def _comparable(folder: Path) -> dict:
    r = json.loads((folder / "result.json").read_text())
    keep = ("best_factors", "best_n_hat", "best_fitness", "critical_dim", "baselines", "evaluations",
            "tokens_forwarded", "tokens_saved_by_racing", "rope_parameters")
    gens = [{k: g[k] for k in ("generation", "best", "median", "parents", "evaluated", "stopped_early")}
            for g in r["generations"]]
    return {**{k: r[k] for k in keep}, "generations": gens}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from workbench.models import load_model

    load_model("teaching-ci")  # trained and cached before any subprocess needs it
    folder = tmp_path_factory.mktemp("reference") / "run"
    done = _search(folder)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


def test_sigkill_then_resume_equals_uninterrupted(reference, tmp_path):
    folder = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "search", *ARGS, "--run-dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not folder.exists() or _evals(folder) < 14:  # mid-search: population done, generations under way
        assert proc.poll() is None, "the search ended before it could be killed"
        assert time.time() - t0 < 300
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    killed_after = _evals(folder)
    assert not (folder / "result.json").exists() and killed_after < json.loads(
        (reference / "result.json").read_text())["evaluations"]
    kept = Journal.read(folder, repair=False).settled  # the estimate counts only what is left to run
    resumed = _search(folder, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"({killed_after} from the journal)" in resumed.stdout or "from the journal" in resumed.stdout
    forwards = 3 * 2  # an evaluation reads 2 windows of each of its 3 documents
    assert re.search(rf"left \(\d+ forwards; {kept * forwards} kept from its journal\)", resumed.stdout), \
        resumed.stdout[:400]
    assert _comparable(folder) == _comparable(reference)
    assert json.loads((folder / "result.json").read_text())["evaluations_replayed"] >= killed_after - 1


def test_two_processes_under_accelerate_launch_equal_one(reference, tmp_path):
    from workbench.launch import accelerate_command, accelerate_env

    folder = tmp_path / "two"
    done = subprocess.run(accelerate_command(2, ["-m", "workbench", "search", *ARGS, "--run-dir", str(folder)]),
                          capture_output=True, text=True, env=accelerate_env(2), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 processes" in done.stdout
    per_rank = {p.name: sum('"kind": "eval"' in line for line in p.read_text().splitlines())
                for p in folder.glob("journal-*.jsonl")}
    assert set(per_rank) == {"journal-0.jsonl", "journal-1.jsonl"} and min(per_rank.values()) > 0  # both worked
    assert _comparable(folder) == _comparable(reference)


FAILING = """
import os, sys
from workbench.search import run
if os.environ.get("RANK") == os.environ["FAIL_RANK"]:
    evaluate, calls = run.Evaluator.evaluate, []
    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("injected failure on this process")
        return evaluate(self, *args, **kwargs)
    run.Evaluator.evaluate = failing
from workbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("failing_rank", [0, 1])
def test_an_evaluation_that_raises_on_one_process_ends_both(reference, tmp_path, failing_rank):
    """Neither process is left waiting in a collective for one that failed: both end, saying why."""
    from workbench.launch import accelerate_command, accelerate_env

    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    folder = tmp_path / "run"
    t0 = time.time()
    done = subprocess.run(accelerate_command(2, [str(script), "search", *ARGS, "--run-dir", str(folder)]),
                          capture_output=True, text=True, env={**accelerate_env(2), "FAIL_RANK": str(failing_rank)},
                          timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "RuntimeError: injected failure on this process" in out, out[-3000:]
    if failing_rank == 1:  # process 0 names the process that failed
        assert "error: process 1 failed while evaluating: RuntimeError: injected failure" in out, out[-3000:]
    assert time.time() - t0 < 300 and not (folder / "result.json").exists()
    assert _evals(folder) >= 3  # what finished before the failure is journaled, for a resume
