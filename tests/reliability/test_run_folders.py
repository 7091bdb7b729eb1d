"""A run folder has a kind and one user at a time: a command refuses a folder of another kind before it writes
anything, and a second process running in a busy folder is told who holds it (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from workbench.cli import main
from workbench.models import load_model
from workbench.runs import RunFolder, RunFolderError, claim, folder_kind, folder_lock
from workbench.search import SearchConfig, SearchError, run_search

from .conftest import TINY_SEARCH as TINY


def test_an_evaluation_into_a_finished_search_is_refused_and_the_search_still_resumes(teaching_ci, finished_search, capsys):
    params = (finished_search / "params.json").read_text()
    assert folder_kind(finished_search) == "search"
    code = main(["eval", "ppl", "--model", "teaching-ci", "--method", "yarn", "--target", "512", "--lengths", "512",
                 "--n-documents", "1", "--run-dir", str(finished_search)])
    err = capsys.readouterr().err
    assert code != 0 and "holds a run of kind 'search'" in err and "Traceback" not in err
    assert (finished_search / "params.json").read_text() == params
    lm = teaching_ci
    again = run_search(lm.model, lm.tokenizer, SearchConfig(**TINY), finished_search, resume=True, report=False)
    assert again.evaluations_replayed == again.evaluations


def test_a_search_into_another_kind_of_folder_is_refused(teaching_ci, tmp_path):
    RunFolder(tmp_path / "ev", {"x": 1})
    lm = teaching_ci
    with pytest.raises(SearchError, match="holds a run of kind 'evaluation'"):
        run_search(lm.model, lm.tokenizer, SearchConfig(**TINY), tmp_path / "ev", report=False)
    with pytest.raises(RunFolderError, match="holds a run of kind 'evaluation' .*writes a run of kind 'finetune'"):
        claim(tmp_path / "ev", "finetune")
    assert json.loads((tmp_path / "ev" / "params.json").read_text())["kind"] == "evaluation"


def test_a_busy_folder_is_refused_with_who_holds_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from workbench.runs import folder_lock
        with folder_lock({str(tmp_path / "run")!r}, "a search"):
            print("held", flush=True)
            time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=f"in use by process {holder.pid} \\(a search\\)"):
            with folder_lock(tmp_path / "run", "a fine-tune"):
                pass
    finally:
        holder.kill()
        holder.wait()
    t0 = time.time()
    with folder_lock(tmp_path / "run", "a fine-tune"):  # released when its holder died
        assert time.time() - t0 < 5


def test_a_second_resume_of_a_running_search_is_refused_and_a_killed_one_resumes_without_repeating(tmp_path):
    import signal

    folder = tmp_path / "run"
    cfg = dict(TINY, target_length=2048, population=8, parents=4, mutants=4, crossovers=4, generations=8,
               n_documents=2)  # long enough (seconds) to be caught running
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from workbench.models import load_model
        from workbench.search import SearchConfig, run_search
        lm = load_model("teaching-ci")
        run_search(lm.model, lm.tokenizer, SearchConfig(**{cfg!r}), {str(folder)!r}, report=False)
    """)])
    journal = folder / "journal-0.jsonl"
    try:
        t0 = time.time()
        while not (journal.exists() and journal.read_text().count("\n") >= 3):
            assert child.poll() is None and time.time() - t0 < 120
            time.sleep(0.05)
        lm = load_model("teaching-ci")
        with pytest.raises(RunFolderError, match=f"in use by process {child.pid} \\(a search\\)"):
            run_search(lm.model, lm.tokenizer, SearchConfig(**cfg), folder, resume=True, report=False)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    done = run_search(lm.model, lm.tokenizer, SearchConfig(**cfg), folder, resume=True, report=False)
    keys = [json.loads(x)["key"] for x in journal.read_text().splitlines() if '"kind": "eval"' in x]
    assert len(keys) == len(set(keys)) == done.evaluations and done.evaluations_replayed > 0  # none lost or repeated


def test_resuming_a_fine_tune_folder_that_does_not_exist_is_refused(tmp_path):
    from workbench.hf import spec_for_model
    from workbench.train import TrainConfig, TrainError, finetune

    lm = load_model("teaching-ci")
    with pytest.raises(TrainError, match="cannot resume .*it does not exist"):
        finetune(lm.model, lm.tokenizer, spec_for_model(lm.model, "yarn", target_length=512),
                 TrainConfig(seq_len=512, steps=1), tmp_path / "typo", resume=True, progress=False)
    assert not (tmp_path / "typo").exists()


def test_one_params_format_for_every_kind_and_an_older_folder_is_refused_with_what_to_do(teaching_ci, finished_search, tmp_path):
    import shutil

    from workbench.runs import FORMAT, differences

    keys = {"kind", "format", "identity", "spec", "spec_hash", "versions", "world_size", "started"}
    search = json.loads((finished_search / "params.json").read_text())
    RunFolder(tmp_path / "ev", {"x": 1})
    evaluation = json.loads((tmp_path / "ev" / "params.json").read_text())
    assert set(search) == set(evaluation) == keys and search["format"] == evaluation["format"] == FORMAT
    assert search["identity"]["config"]["racing"] == "exact" and evaluation["identity"] == {"x": 1}
    old = tmp_path / "old"
    shutil.copytree(finished_search, old)
    (old / "params.json").write_text(json.dumps({"kind": "search", "identity": search["identity"],
                                                 "versions": search["versions"], "started": "2026-11-01 10:00:00"}))
    lm = teaching_ci
    with pytest.raises(SearchError, match="written by an older workbench \\(started 2026-11-01 10:00:00.*format 1.*"
                                          "start a new run folder"):
        run_search(lm.model, lm.tokenizer, SearchConfig(**TINY), old, resume=True, report=False)
    assert folder_kind(old) == "search"  # still recognised: another kind of run is refused there too
    assert differences({"a": {"b": 1}, "c": 2}, {"a": {"b": 3}, "c": 2}) == ["a.b: 1 in the folder, 3 now"]
