from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("ipywidgets")

from widgets.search_monitor import SearchMonitor  # noqa: E402
from workbench.search import SearchConfig  # noqa: E402

CONFIG = SearchConfig(target_length=512, population=8, parents=4, mutants=2, crossovers=2, generations=6,
                      n_documents=2, n_hat_top=1, n_hat_choices=(0, 4))


def test_start_draws_live_then_stop_and_resume(tmp_path):
    mon = SearchMonitor(model="teaching-ci", run_dir=str(tmp_path / "run"), config=CONFIG)
    job = mon.start()
    t0 = time.time()
    while len(mon.generations) < 2:  # let it run a little, then press Stop
        assert job.error is None and time.time() - t0 < 120
        time.sleep(0.05)
    mon.stop()
    job.join(120)
    assert mon.result is not None and mon.result.stopped and "Resume" in mon.status.value
    names = [t["name"] for t in mon.curve.traces]
    assert names[:2] == ["best", "median of parents"] and {n.split()[0] for n in names[2:]} == {"PI", "NTK", "YaRN"}
    assert all(n.split()[1] == "seed" for n in names[2:])  # the seeds, evaluated with LongRoPE's attention factor
    assert any(t["name"] == "best" for t in mon.factors.traces) and "<td>1</td>" in mon.table.value
    stopped_at = len(mon.evals)
    job = mon.start(resume=True, wait=True)
    assert job.error is None and not mon.result.stopped
    assert mon.result.evaluations_replayed >= stopped_at - 1 and len(mon.generations) == CONFIG.generations + 1
    assert "token-forwards" in mon.status.value and mon.progress.value > 0.9


def test_open_replays_a_run_folder(tmp_path):
    live = SearchMonitor(model="teaching-ci", run_dir=str(tmp_path / "run"), config=CONFIG, report_documents=3)
    live.start(wait=True)
    assert len(json.loads((tmp_path / "run" / "report.json").read_text())["documents"]) == 3
    viewer = SearchMonitor(model="teaching-ci")
    viewer.open(tmp_path / "run")
    assert len(viewer.generations) == len(live.generations) and viewer.done is not None
    assert [round(g["best"], 6) for g in viewer.generations] == [round(g["best"], 6) for g in live.generations]
    assert viewer.report is not None and "held-out" in viewer.status.value
    viewer.open(tmp_path / "missing")
    assert "does not exist" in viewer.status.value
    watcher = SearchMonitor(model="teaching-ci")
    watcher.replay(tmp_path / "run", seconds=0.2).join(timeout=30)
    assert [round(g["best"], 6) for g in watcher.generations] == [round(g["best"], 6) for g in live.generations]
    assert watcher.done is not None and watcher.replay(tmp_path / "missing") is None


def test_start_without_config():
    mon = SearchMonitor(model="teaching-ci")
    assert mon.start() is None and "no search configuration" in mon.status.value


def test_a_resumed_folder_replays_each_generation_and_evaluation_once(teaching_ci, tmp_path):
    from workbench.search import run_search

    lm = teaching_ci
    small = SearchConfig(target_length=512, population=4, parents=2, mutants=1, crossovers=1, generations=3,
                         n_documents=1, n_hat_stage=False)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 8

    first = run_search(lm.model, lm.tokenizer, small, tmp_path / "run", stop=stop, report=False)
    assert first.stopped
    done = run_search(lm.model, lm.tokenizer, small, tmp_path / "run", resume=True, report=False)
    viewer = SearchMonitor(model="teaching-ci")
    viewer.open(tmp_path / "run", follow=False)
    assert [g["generation"] for g in viewer.generations] == list(range(small.generations + 1))
    assert len(viewer.evals) == done.evaluations


def test_status_counts_the_budget_honestly_and_waits_for_the_report():
    from workbench.events import Event

    mon = SearchMonitor(model="teaching-ci")
    mon.job = type("Finished", (), {"running": True})()  # a search job whose run has not returned yet
    mon.result = None

    def ev(kind, **data):
        mon.handle(Event(kind, data), force=True)

    ev("search.start", budget=2)
    for k, (fit, stage) in enumerate([(5.0, "init"), (4.0, "generation"), (3.9994, "n_hat")]):
        ev("search.eval", key=str(k), factors=[1.0, 2.0], n_hat=4 * (stage == "n_hat"), fitness=fit, complete=True,
           documents=1, stage=stage, generation=0, replayed=False, tokens_total=10, seconds=1.0)
    ev("search.generation", generation=0, best=4.0, median=4.5, best_factors=[1.0, 2.0], population_factors=[])
    ev("search.done", stopped=False)
    status = mon.status.value
    assert "2 of 2 evaluations + 1 in the n̂ stage" in status  # not "3 evaluations of a budget of 2"
    assert "best PPL 3.999;" in status and "<td>3.999</td>" in mon.table.value  # status and table agree
    assert "report running" in status and "<b>done</b>" not in status
    mon.result = object()  # the search (and its report) returned
    mon.draw()
    assert "<b>done</b>" in mon.status.value
