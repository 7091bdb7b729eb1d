"""A search run folder read from its files (its standing, its factor set with provenance) and its held-out
report, window by window: resumed after a stop with nothing read twice, and a changed best read again alone."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main
from workbench.events import ListSink
from workbench.factors import load_factor_set
from workbench.hf import spec_for_model
from workbench.rope import ramp_factors, spec_from_dict
from workbench.search import GRID, SearchConfig, SearchError, run_search
from workbench.search.heldout import heldout_windows, kept_forwards, run_heldout
from workbench.search.standing import read_standing

TINY = dict(target_length=512, population=4, parents=2, mutants=1, crossovers=1, generations=2, n_documents=1,
            per_document=1, n_hat_stage=False, corpus="shakespeare")


@pytest.fixture(scope="module")
def searched(teaching_ci, tmp_path_factory):
    """A finished tiny search and one stopped after its first generation."""
    root = tmp_path_factory.mktemp("runs")
    run_search(teaching_ci.model, teaching_ci.tokenizer, SearchConfig(**TINY), root / "done", report=False,
               model_name="teaching-ci")
    calls = []

    def stop() -> bool:
        calls.append(1)
        return (root / "part" / "journal-0.jsonl").is_file() and len(
            (root / "part" / "journal-0.jsonl").read_text().splitlines()) >= 5
    run_search(teaching_ci.model, teaching_ci.tokenizer, SearchConfig(**TINY), root / "part", report=False,
               model_name="teaching-ci", stop=stop)
    return root


def test_a_finished_search_stands_at_its_result(searched):
    s = read_standing(searched / "done")
    assert s.finished and s.evaluations == s.result.evaluations and s.budget == 8
    assert s.best_spec() == spec_from_dict(s.result.spec) and s.best_factors() == s.result.best_factors
    assert s.best.fitness == pytest.approx(s.result.best_fitness)
    assert s.tokens_forwarded == s.result.tokens_forwarded and "2 of 2 generations" not in s.summary()


def test_an_unfinished_search_stands_at_its_best_journaled_candidate(searched):
    s = read_standing(searched / "part")
    assert not s.finished and 0 < s.evaluations < s.budget
    # stopped in generation 1: the initial population (generation 0) is not counted among the 2 generations
    assert s.generations_done == 0 and "0 of 2 generations" in s.summary()
    best = min((r for r in s.records.values() if r.complete), key=lambda r: r.fitness)
    assert s.best_factors() == [g / GRID for g in best.genome]
    spec = s.best_spec()
    geometry = spec_for_model(__import__("workbench.models").models.load_model_config("teaching-ci"), "default")
    assert (spec.method, spec.target_length, spec.long_factor, spec.attention_policy) == (
        "longrope", 512, tuple(s.best_factors()), "su")
    assert spec.original_max_position_embeddings == geometry.original_max_position_embeddings
    prov = s.factor_set("tiny", "").provenance
    assert prov["finished"] is False and prov["evaluations"] == s.evaluations and prov["token_forwards"] > 0
    assert prov["cpu"] and prov["commits_of_starts"] and prov["dtype"] == "fp32"


def test_a_standing_presents_itself_from_its_events(searched):
    s = read_standing(searched / "part")
    assert [g["generation"] for g in s.generations] == list(range(len(s.generations))) and s.generations
    assert set(s.baselines) == {"linear", "ntk", "yarn"} and "| PI seed |" in s.markdown()
    assert "| best so far (generation" in s.markdown()  # unfinished; a finished one's is "| best (generation"
    progress, factors = s.figures()
    assert len(progress.data) >= 2 and len(factors.data) == 4  # best and median; three seeds and the best
    d = s.to_dict()
    assert d["best_factors"] == s.best_factors() and d["evaluations"] == s.evaluations


def test_shipped_runs_are_read_by_name():
    from workbench.search.standing import SHIPPED_RUNS, shipped_runs

    assert "smollm2-32k" in shipped_runs()
    shipped = read_standing("smollm2-32k")
    assert shipped.folder == SHIPPED_RUNS / "smollm2-32k"
    # its two hand ramps (--factors) were evaluated in generation 0: the 1-to-5 ramp led it
    seeds = shipped.user_seed_fitness()
    ramp = "smollm2-ramp-9.6-31-to-5 seed"  # a seed is named by the shipped seed file it equals
    assert set(seeds) == {ramp, "smollm2-ramp-9.6-31-to-6 seed"} and seeds[ramp] == pytest.approx(23.0747, abs=1e-3)
    assert shipped.generations[0]["best"] == pytest.approx(seeds[ramp])


def test_a_folder_without_a_search_is_refused_in_one_line(tmp_path):
    with pytest.raises(SearchError, match="no readable params.json"):
        read_standing(tmp_path)
    (tmp_path / "params.json").write_text(json.dumps({"kind": "finetune"}))
    with pytest.raises(SearchError, match="not a search"):
        read_standing(tmp_path)


def _specs(teaching_ci, s):
    yarn = spec_for_model(teaching_ci.model, "yarn", target_length=512)
    return {"searched": s.best_spec(), "yarn": yarn}


def test_the_heldout_report_resumes_without_reading_twice_and_rereads_a_changed_best(teaching_ci, searched,
                                                                                    tmp_path):
    s = read_standing(searched / "part")
    windows = heldout_windows(teaching_ci.tokenizer, ["shakespeare", "bible"], 512, 2)
    assert len(windows) == 4 and len({w.label for w in windows}) == 4
    identity = {"length": 512}
    whole = run_heldout(teaching_ci.model, windows, _specs(teaching_ci, s), tmp_path / "whole", identity=identity)
    sink, seen = ListSink(), []

    def stop() -> bool:
        seen.append(1)
        return len(seen) > 3
    assert run_heldout(teaching_ci.model, windows, _specs(teaching_ci, s), tmp_path / "h", identity=identity,
                       sink=sink, stop=stop) is None
    assert len((tmp_path / "h" / "windows.jsonl").read_text().splitlines()) == 3
    assert kept_forwards(tmp_path / "h", _specs(teaching_ci, s)) == 3  # what a resumed report's estimate leaves out
    with pytest.raises(SearchError, match="--resume"):
        run_heldout(teaching_ci.model, windows, _specs(teaching_ci, s), tmp_path / "h", identity=identity)
    sink = ListSink()
    again = run_heldout(teaching_ci.model, windows, _specs(teaching_ci, s), tmp_path / "h", identity=identity,
                        resume=True, sink=sink)
    start = next(e.data for e in sink.events if e.kind == "heldout.start")
    assert (start["forwards"], start["kept"]) == (5, 3)
    assert again.to_dict() == whole.to_dict()
    assert again.corpora == ["shakespeare"] * 2 + ["bible"] * 2 and set(again.wins) == {"yarn"}
    assert again.window_markdown().count("\n") == 5 and "**" in again.window_markdown()
    changed = {**_specs(teaching_ci, s), "searched": spec_for_model(teaching_ci.model, "ntk", target_length=512)}
    assert kept_forwards(tmp_path / "h", changed) == 4
    sink = ListSink()
    run_heldout(teaching_ci.model, windows, changed, tmp_path / "h", identity=identity, resume=True, sink=sink)
    start = next(e.data for e in sink.events if e.kind == "heldout.start")
    assert (start["forwards"], start["kept"]) == (4, 4)  # the changed setting alone, on every window


def test_cli_exports_factors_and_reports_heldout_with_a_hand_ramp(searched, tmp_path, capsys):
    out = tmp_path / "tiny.json"
    assert main(["export", "factors", "--run-dir", str(searched / "done"), "--name", "tiny", "--out", str(out)]) == 0
    fs = load_factor_set(out)
    assert fs.spec == read_standing(searched / "done").best_spec() and fs.provenance["finished"] is True
    ramp = tmp_path / "ramp.json"
    ramp.write_text(json.dumps(ramp_factors(32, 9.6, 31, 1.0, 2.0)))
    argv = ["eval", "heldout", "--run-dir", str(searched / "done"), "--report-dir", str(tmp_path / "rep"),
            "--corpus", "shakespeare", "--windows", "2", "--factors", str(ramp)]
    assert main([*argv, "--methods", "ntk", "yarn"]) == 0  # the methods that matter first
    text = capsys.readouterr().out
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert list(report["settings"]) == ["searched", "ntk", "yarn", "ramp"]
    assert "forwards to run" in text and "| window |" in text and "wins_vs_ramp" in report
    assert main(argv) == 2 and "add --resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0 and "2 forwards to run, 8 kept" in capsys.readouterr().out  # PI alone
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert list(report["settings"]) == ["searched", "linear", "ntk", "yarn", "ramp"]
    assert main([*argv, "--resume"]) == 0 and "0 forwards to run, 10 kept" in capsys.readouterr().out
    assert main([*argv, "--resume", "--methods", "dynamic"]) == 2
    assert "--methods dynamic: the search was seeded with linear, ntk, yarn" in capsys.readouterr().err


def test_the_whole_search_is_told_by_the_last_start_that_has_replayed_its_journal():
    from workbench.events import Event
    from workbench.search.standing import whole_search

    def ev(kind: str, generation: int = 0) -> Event:
        return Event(kind, {"generation": generation})
    first = [ev("search.start"), ev("search.generation", 0), ev("search.generation", 1)]
    resumed = [ev("search.start"), ev("search.generation", 0), ev("search.generation", 1), ev("search.generation", 2)]
    assert whole_search(first + resumed) == resumed
    restart = ev("search.start")
    assert whole_search(first + resumed + [restart]) == resumed + [restart]  # read just after a restart
    assert whole_search([]) == [] and whole_search(first[1:]) == first[1:]


def test_a_seed_is_labelled_by_the_shipped_seed_file_it_equals_else_by_its_number():
    from workbench.search.standing import SHIPPED_SEEDS, user_seed_labels

    ramp = json.loads((SHIPPED_SEEDS / "smollm2-ramp-9.6-31-to-2.5.json").read_text())
    nudged = [*ramp[:-1], ramp[-1] + 0.01]
    assert user_seed_labels([nudged, ramp]) == ["user seed 1", "smollm2-ramp-9.6-31-to-2.5 seed"]
    assert user_seed_labels([]) == []
