"""Evolutionary search: the algorithm's invariants, validation, reproducibility, racing, n_hat, LongRoPE2,
journal recovery and refusal to resume with other settings."""

from __future__ import annotations

import json
import math
import random

import pytest

from workbench.models import load_model
from workbench.search import (
    GRID,
    GeneticAlgorithm,
    HeldoutReport,
    Journal,
    Search,
    SearchConfig,
    SearchError,
    Space,
    Threshold,
    candidate_key,
    hopeless,
    rank_correlation,
    run_search,
    rung_fidelity,
)

TINY = dict(target_length=512, population=8, parents=4, mutants=2, crossovers=2, generations=3, n_documents=2,
            n_hat_top=1, n_hat_choices=(0, 4, 64), corpus="shakespeare")


def test_mutation_and_crossover_keep_the_genome_valid_and_new():
    space = Space(n_pairs=32, s=8.0, max_grid=900)
    ga = GeneticAlgorithm(space, SearchConfig(target_length=2048, seed=3))
    parent = space.project([1 + 7 * i / 31 for i in range(32)])
    seen = {parent}
    for _ in range(200):
        child = ga.mutate(parent, seen)
        assert space.valid(child) and child not in seen
        assert child[0] >= GRID and child[-1] <= 900 and all(b >= a for a, b in zip(child, child[1:], strict=False))
        seen.add(child)
    other = ga.mutate(parent, seen)
    for _ in range(50):
        child = ga.crossover(parent, other, seen)
        assert space.valid(child) and child not in seen
        seen.add(child)


def test_longrope2_space_is_strictly_increasing_from_s():
    space = Space(n_pairs=32, s=2.0, max_grid=300, cd=19)
    packed = space.project([1.0] * 32)
    assert len(packed) == 13 and packed == tuple(range(200, 213))  # strictly increasing from s
    g = space.project([1.0] * 19 + [2.0 + 0.08 * j for j in range(13)])  # a spread ramp
    ga = GeneticAlgorithm(space, SearchConfig(target_length=2048, mode="longrope2"))
    seen = {g}
    for _ in range(100):
        child = ga.mutate(g, seen)
        seen.add(child)
        assert space.valid(child) and child[0] >= 200
    full = space.factors(child)
    assert len(full) == 32 and full[0] == 1.0 and full[19] == child[0] / GRID


def test_heuristic_racing_rule():
    t = Threshold(nll=[3.0, 3.0, 3.0], floor=[2.9, 2.8, 2.9])
    assert not hopeless([3.05], t)  # 0.05 behind, 0.3 of slack left
    assert hopeless([3.5], t)  # 0.5 behind, at most 0.3 to gain
    assert not hopeless([2.0], t) and hopeless([3.2, 3.1], t)
    assert not hopeless([9.0], None)
    # the counter-example: the floor is a guess, not a bound; this candidate would have become a parent
    assert hopeless([4.1], Threshold(nll=[3.0, 3.0, 3.0], floor=[2.5, 2.5, 2.5])) and 4.1 + 2.0 + 2.0 < 9.0


def test_exact_racing_stops_only_candidates_that_cannot_win():
    t = Threshold(nll=[3.0, 3.0, 3.0])  # no floor: a loss is never below 0
    assert not hopeless([4.1], t) and not hopeless([4.1, 2.0], t)  # [4.1, 2.0, 2.0] beats the parent: kept
    assert not hopeless([8.9], t) and hopeless([9.01], t) and hopeless([5.0, 4.5], t)
    rng = random.Random(0)
    for _ in range(2000):  # never drops a candidate whose complete losses beat the threshold
        parent = [rng.uniform(0.5, 6) for _ in range(4)]
        child = [rng.uniform(0.5, 6) for _ in range(4)]
        stopped = any(hopeless(child[:k], Threshold(parent)) for k in range(1, 4))
        assert not (stopped and sum(child) / 4 < sum(parent) / 4)


@pytest.mark.parametrize("kwargs,message", [
    (dict(population=3, parents=4), "population=3 is not allowed: at least parents=4"),
    (dict(parents=1, population=4), "parents=1 is not allowed: at least 2"),
    (dict(mutation_p=1.5), "mutation_p=1.5 is not allowed: a probability in \\[0, 1\\]"),
    (dict(crossover_p=-0.1), "crossover_p=-0.1 is not allowed"),
    (dict(mode="longrope3"), "mode='longrope3' is not allowed"),
    (dict(max_factor="3s"), "max_factor='3s' is not allowed"),
    (dict(racing="maybe"), "racing='maybe' is not allowed: one of \\('exact', 'heuristic', 'off'\\)"),
    (dict(attention_policy="bogus"), "attention_policy='bogus' is not allowed"),
    (dict(attention_policy="constant"), "attention_policy='constant' is not allowed: .*fixed attention_factor"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(SearchError, match=message):
        SearchConfig(target_length=512, **kwargs)


def test_max_factor_defaults_follow_the_mode():
    assert SearchConfig(target_length=2048).max_factor_for(8) == 9  # LongRoPE: 1 + s
    assert SearchConfig(target_length=2048, mode="longrope2").max_factor_for(8) == 16  # LongRoPE2: 2s
    assert SearchConfig(target_length=2048, mode="longrope2", max_factor="1+s").max_factor_for(8) == 9
    assert SearchConfig(target_length=2048, max_factor="1.25s").max_factor_for(8) == 10
    assert SearchConfig(target_length=2048, max_factor=12.5).max_factor_for(8) == 12.5


def test_target_and_max_factor_errors(teaching_ci, tmp_path):
    with pytest.raises(SearchError, match="target_length=256 is not allowed: it must be above the model's original "
                                          "context L0=256"):
        Search(teaching_ci.model, teaching_ci.tokenizer, SearchConfig(target_length=256), tmp_path / "a")
    with pytest.raises(SearchError, match="max_factor=1.5 is not allowed: the maximum factor must be at least the "
                                          "extension ratio s=2"):
        Search(teaching_ci.model, teaching_ci.tokenizer, SearchConfig(target_length=512, max_factor=1.5), tmp_path / "b")


def test_a_search_folder_presents_itself(teaching_ci, tmp_path):
    """result.json and report.json read back as typed results that print, tabulate and draw themselves."""
    from workbench.search import SearchOutcome, SearchResult

    cfg = SearchConfig(**{**TINY, "generations": 1, "n_hat_stage": False})
    result = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "r", report_documents=2)
    outcome = SearchOutcome.read(tmp_path / "r", model="teaching-ci")
    assert outcome.result == SearchResult.from_dict(result.to_dict()) and outcome.report is not None
    assert set(outcome.result.baseline_factors) == {"linear", "ntk", "yarn"}  # the seeds' curves, for the figure
    lines = outcome.summary().splitlines()
    assert lines[0].startswith(f"best PPL {result.best_fitness:.4f} (seeds") and "PI seed" in lines[0]
    assert lines[1].startswith("held-out: searched ") and "than YaRN on" in lines[1]
    table = outcome.markdown()
    assert "| PI seed |" in table and "| YaRN |" in table and table.count("\n|---") == 2
    figures = outcome.figures()
    assert [f.layout.title.text.split("<br>")[0] for f in figures] == [
        "Fitness per generation", "Factor curves", "Held-out: searched − YaRN PPL per window"]
    assert len(figures[1].data) == 4  # three seeds' curves and the best
    saved = outcome.to_dict()
    assert saved["model"] == "teaching-ci" and saved["best_fitness"] == result.best_fitness
    assert saved["report"] == outcome.report.to_dict()
    old = {k: v for k, v in result.to_dict().items() if k != "baseline_factors"}  # a result.json from before
    assert SearchResult.from_dict({**old, "future_key": 1}).baseline_factors == {}
    assert SearchOutcome.read(tmp_path / "nothing") is None


def test_small_search_is_reproducible_never_repeats_and_beats_its_seeds(teaching_ci, tmp_path):
    cfg = SearchConfig(**TINY)
    a = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "a", report_documents=3)
    b = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "b", report=False)
    assert a.best_factors == b.best_factors and a.best_fitness == b.best_fitness and a.best_n_hat == b.best_n_hat
    assert a.best_fitness <= min(a.baselines.values())
    keys = [json.loads(line)["key"] for line in (tmp_path / "a" / "journal-0.jsonl").read_text().splitlines()
            if '"kind": "eval"' in line]
    assert len(keys) == len(set(keys)) == a.evaluations  # no candidate evaluated twice
    assert any("|4|" in k or "|64|" in k for k in keys)  # the n_hat stage ran
    assert set(a.baselines) == {"linear", "ntk", "yarn"}
    assert a.baseline_labels == {"linear": "PI seed", "ntk": "NTK seed", "yarn": "YaRN seed"}
    assert a.rope_parameters is not None or a.best_n_hat > 0
    report = HeldoutReport.read(tmp_path / "a")
    assert set(report.settings) == {"searched", "linear", "ntk", "yarn"} and 0 <= report.wins["yarn"] <= 1
    assert 0 <= report.document_wins["yarn"] <= 1 and len(report.source_documents) <= len(report.documents)
    assert all("#" not in d for d in report.source_documents)  # a document's later windows count as that document
    assert HeldoutReport.from_dict(json.loads((tmp_path / "a" / "report.json").read_text())) == report
    other = run_search(teaching_ci.model, teaching_ci.tokenizer, SearchConfig(**{**TINY, "seed": 1}), tmp_path / "c",
                       report=False)
    assert other.evaluations == a.evaluations


def test_racing_saves_forwards_and_exact_racing_ends_like_the_plain_algorithm(teaching_ci, tmp_path):
    cfg = dict(TINY, generations=4, n_documents=4, n_hat_stage=False)
    runs = {mode: run_search(teaching_ci.model, teaching_ci.tokenizer, SearchConfig(**cfg, racing=mode), tmp_path / mode,
                             report=False) for mode in ("exact", "heuristic", "off")}
    plain, exact, heuristic = runs["off"], runs["exact"], runs["heuristic"]
    assert plain.tokens_saved_by_racing == 0 and plain.tokens_forwarded == plain.evaluations * 4 * 512
    assert heuristic.tokens_saved_by_racing > 0 and heuristic.tokens_forwarded < plain.tokens_forwarded
    assert exact.tokens_forwarded == plain.tokens_forwarded - exact.tokens_saved_by_racing
    assert exact.racing == "exact" and SearchConfig(**cfg, racing=True).racing == "exact"
    # exact racing drops no future parent: every generation keeps the plain algorithm's parents
    assert [g["parents"] for g in exact.generations] == [g["parents"] for g in plain.generations]
    assert exact.best_factors == plain.best_factors and exact.best_fitness == plain.best_fitness


def test_longrope2_mode(teaching_ci, tmp_path):
    cfg = SearchConfig(**{**TINY, "mode": "longrope2", "critical_dim_span": 1, "generations": 1, "n_hat_stage": False})
    result = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "l2", report_documents=2)
    assert result.critical_dim in (18, 19, 20) and result.spec["method"] == "longrope2"
    factors = result.best_factors
    cd = result.critical_dim
    assert all(b > a for a, b in zip(factors[cd:], factors[cd + 1:], strict=False)) and factors[cd] >= 2.0
    assert factors[0] == 1.0
    assert json.loads((tmp_path / "l2" / "report.json").read_text())["mode"] == "longrope2"


def test_resume_refuses_other_settings_and_recovers_a_truncated_journal(teaching_ci, tmp_path):
    folder = tmp_path / "run"
    cfg = SearchConfig(**{**TINY, "generations": 1, "n_hat_stage": False})
    first = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, folder, report=False)
    with pytest.raises(SearchError, match="already holds a search; pass resume=True"):
        Search(teaching_ci.model, teaching_ci.tokenizer, cfg, folder)
    with pytest.raises(SearchError, match="different settings: config.generations: 1 in the folder, 2 now"):
        Search(teaching_ci.model, teaching_ci.tokenizer, SearchConfig(**{**TINY, "generations": 2}), folder, resume=True)
    ci_small = load_model("tiny-random", max_position_embeddings=256)
    with pytest.raises(SearchError, match="different settings: .*model"):
        Search(ci_small.model, teaching_ci.tokenizer, cfg, folder, resume=True, model_name="other")
    journal = folder / "journal-0.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:5]) + "\n" + lines[5][: len(lines[5]) // 2])  # a write torn by a kill
    contents = Journal.read(folder)
    assert len(contents.records) == 5 and "line 6 was torn by a killed write" in contents.warnings[0]
    assert journal.read_text() == "\n".join(lines[:5]) + "\n"  # cut off: the next append starts a clean line
    again = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, folder, resume=True, report=False)
    assert again.best_factors == first.best_factors and again.evaluations_replayed == 5
    # a second resume of the finished run replays every evaluation: nothing after the tear is recomputed again
    third = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, folder, resume=True, report=False)
    assert third.evaluations_replayed == third.evaluations and third.best_factors == first.best_factors
    gens = [json.loads(x)["generation"] for x in journal.read_text().splitlines() if '"kind": "generation"' in x]
    assert len(gens) == len(set(gens))  # each generation journaled once across the resumes


def test_a_resume_beside_a_running_search_is_refused_and_leaves_its_journal_alone(teaching_ci, tmp_path):
    from workbench.runs import RunFolderError, folder_lock

    folder = tmp_path / "run"
    cfg = SearchConfig(**{**TINY, "generations": 1, "n_hat_stage": False})
    run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, folder, report=False)
    journal = folder / "journal-0.jsonl"
    lines = journal.read_text().splitlines()
    writing = "\n".join(lines[:5]) + "\n" + lines[5][: len(lines[5]) // 2]  # the other search is mid-write
    journal.write_text(writing)
    with folder_lock(folder, "a search"):  # that other search holds the folder
        second = Search(teaching_ci.model, teaching_ci.tokenizer, cfg, folder, resume=True)
        with pytest.raises(RunFolderError, match="a search"):
            second.run()
    assert journal.read_text() == writing  # its half-written line was not cut off from under it
    again = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, folder, resume=True, report=False)
    assert again.evaluations_replayed == 5 and "torn by a killed write" in again.notes[0]


def test_stop_flag_ends_between_evaluations(teaching_ci, tmp_path):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 6

    result = run_search(teaching_ci.model, teaching_ci.tokenizer, SearchConfig(**TINY), tmp_path / "s", stop=stop)
    assert result.stopped and result.evaluations < 8 and not (tmp_path / "s" / "report.json").exists()
    random.seed(0)


def test_exact_racing_by_position_stops_mid_document_and_ends_like_the_plain_algorithm(teaching_ci, tmp_path):
    cfg = dict(TINY, generations=3, n_documents=2, n_hat_stage=False, chunk_tokens=64)
    plain = run_search(teaching_ci.model, teaching_ci.tokenizer, SearchConfig(**cfg, racing="off"), tmp_path / "p",
                       report=False)
    exact = run_search(teaching_ci.model, teaching_ci.tokenizer, SearchConfig(**cfg, racing="exact"), tmp_path / "e",
                       report=False)
    assert [g["parents"] for g in exact.generations] == [g["parents"] for g in plain.generations]
    assert exact.best_factors == plain.best_factors and exact.best_fitness == plain.best_fitness
    assert exact.tokens_forwarded == plain.tokens_forwarded - exact.tokens_saved_by_racing
    # one candidate held against a bar it cannot reach: it stops at the chunk where its losses pass the bar
    search = Search(teaching_ci.model, teaching_ci.tokenizer, SearchConfig(**cfg), tmp_path / "x")
    space = search._spaces()[0]
    genome = space.project([1.0] * search.n_pairs)
    full = search.evaluator.evaluate(space, genome, 0, None)
    assert full.complete and full.reached == [512, 512]
    bar = Threshold([0.3 * x for x in full.nll])  # its total loss is 0.3 of this candidate's
    stopped = search.evaluator.evaluate(space, genome, 0, bar)
    assert stopped.raced and not stopped.complete and stopped.reached == [320]  # 0.6 of one document: 5 chunks
    assert sum(full.nll) * 0.3 < stopped.nll[0] * 319 / 511 and stopped.nll[0] * 255 / 511 <= sum(full.nll) * 0.3


def test_a_candidate_stopped_mid_window_goes_on_from_its_save_in_another_process(teaching_ci, tmp_path):
    cfg = SearchConfig(**dict(TINY, n_hat_stage=False, chunk_tokens=64))
    straight = Search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "a")
    space = straight._spaces()[0]
    genome, other = space.project([1.0] * straight.n_pairs), space.project([2.0] * straight.n_pairs)
    key = candidate_key(space.cd, genome, 0)
    whole = straight.evaluator.evaluate(space, genome, 0, None, key=key)
    chunks = []
    first = Search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "b")
    first.evaluator.checkpoint_every = math.inf  # saved when stopped (a Ctrl-C saves the same way)
    assert first.evaluator.evaluate(space, genome, 0, None, key=key, stop=lambda: len(chunks) >= 3,
                                    on_chunk=lambda read, goal: chunks.append(read)) is None
    saved = tmp_path / "b" / "partial-0.pt"
    assert chunks == [64, 128, 192] and saved.is_file()  # the first document, 3 of its 8 chunks
    second = Search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "b", resume=True)  # a new process
    assert second.evaluator.evaluate(space, other, 0, None, key=candidate_key(space.cd, other, 0)).complete
    assert saved.is_file() and second.evaluator.forwarded == 1024  # another candidate: read whole, the save kept
    second.evaluator.forwarded = 0
    resumed = second.evaluator.evaluate(space, genome, 0, None, key=key)
    assert (resumed.nll, resumed.reached, resumed.complete) == (whole.nll, whole.reached, True)
    assert second.evaluator.forwarded == 1024 - 192 and resumed.seconds_before > 0 and not saved.exists()
    third = Search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "c")
    third.evaluator.checkpoint_every = 0.0  # saved after every chunk while it reads, gone once it is finished
    seen = []
    done = third.evaluator.evaluate(space, genome, 0, None, key=key,
                                    on_chunk=lambda read, goal: seen.append((tmp_path / "c" / "partial-0.pt").is_file()))
    assert seen[0] is False and all(seen[1:]) and done.complete and not (tmp_path / "c" / "partial-0.pt").exists()


def test_a_search_stopped_inside_a_candidate_resumes_from_its_save_and_ends_exactly(teaching_ci, tmp_path):
    cfg = SearchConfig(**dict(TINY, generations=1, n_hat_stage=False, chunk_tokens=64))
    whole = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "a", report=False)
    journal, after = tmp_path / "b" / "journal-0.jsonl", []

    def stop() -> bool:  # three candidates journaled, then the check before the fourth and two of its chunks
        if journal.is_file() and len(journal.read_text().splitlines()) >= 3:
            after.append(1)
        return len(after) > 3

    assert run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "b", report=False, stop=stop).stopped
    evals = [x for x in journal.read_text().splitlines() if '"kind": "eval"' in x]
    assert (tmp_path / "b" / "partial-0.pt").is_file() and len(evals) == 3
    resumed = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "b", report=False, resume=True)
    assert (resumed.best_factors, resumed.best_fitness) == (whole.best_factors, whole.best_fitness)
    assert [g["parents"] for g in resumed.generations] == [g["parents"] for g in whole.generations]
    assert resumed.evaluations_replayed == 3 and not (tmp_path / "b" / "partial-0.pt").exists()


def test_rungs_read_the_best_part_further_and_a_killed_search_resumes_exactly(teaching_ci, tmp_path):
    cfg = SearchConfig(**{**TINY, "generations": 2, "n_hat_stage": False, "chunk_tokens": 96, "rungs": (128, 320),
                          "rung_keep": 0.5})
    whole = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "a", report=False)
    lines = [json.loads(x) for x in (tmp_path / "a" / "journal-0.jsonl").read_text().splitlines()]
    evals = [x for x in lines if x["kind"] == "eval"]
    init = [x for x in evals if x["stage"] == "init"]
    firsts = {x["key"]: x for x in reversed(init)}  # the first line of each candidate
    assert all(len(x["rung_loss"]) >= 1 for x in firsts.values())
    # 8 candidates to 128 tokens, 4 on to 320, 2 read whole; continued ones are journaled once more per rung
    assert len(firsts) == 8 and len(init) == 8 + 4 + 2
    assert sum(x["complete"] for x in init) == 2 and whole.tokens_forwarded < whole.evaluations * 2 * 512
    ranked = sorted(firsts.values(), key=lambda x: x["rung_loss"][0])
    continued = {x["key"] for x in init if len(x["rung_loss"]) == 2}
    assert continued == {x["key"] for x in ranked[:4]}  # the rung kept the best half by the prefix loss
    # a kill in the middle of the first batch's second rung: the journal keeps what was finished
    cut = (tmp_path / "b")
    cut.mkdir()
    for name in ("params.json",):
        (cut / name).write_text((tmp_path / "a" / name).read_text())
    raw = (tmp_path / "a" / "journal-0.jsonl").read_text().splitlines()
    (cut / "journal-0.jsonl").write_text("\n".join(raw[:10]) + "\n")  # 8 at the first rung, 2 at the second
    resumed = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, cut, resume=True, report=False)
    assert resumed.best_factors == whole.best_factors and resumed.best_fitness == whole.best_fitness
    assert [g["parents"] for g in resumed.generations] == [g["parents"] for g in whole.generations]
    again = run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, cut, resume=True, report=False)
    assert again.evaluations_replayed == again.evaluations and again.best_fitness == whole.best_fitness
    fidelity = rung_fidelity(tmp_path / "a", (128, 320))
    assert [row["candidates"] for row in fidelity][0] == len({x["key"] for x in evals})  # every candidate: rung 1
    assert fidelity[0]["with_next_pairs"] == fidelity[1]["candidates"] >= 4
    assert fidelity[1]["with_whole_pairs"] == sum(x["complete"] for x in evals)
    assert all(-1 <= row["with_whole"] <= 1 for row in fidelity if row["with_whole"] is not None)


def test_rank_correlation():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert rank_correlation([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9487, abs=1e-4)  # ties share a rank
    assert math.isnan(rank_correlation([1, 2], [2, 1]))


@pytest.mark.parametrize("kwargs,message", [
    (dict(rungs=(600,)), "rungs=\\(600,\\) is not allowed: strictly increasing prefix lengths below"),
    (dict(rungs=(256, 128)), "strictly increasing"),
    (dict(rungs=(0,)), "prefix lengths in tokens"),
    (dict(rungs=(128,), mode="longrope2"), "needle-driven fitness"),
    (dict(rung_keep=0), "rung_keep=0 is not allowed: a fraction in \\(0, 1\\]"),
    (dict(dtype="fp16"), "dtype='fp16' is not allowed: one of \\('fp32', 'bf16'\\)"),
    (dict(chunk_tokens=0), "chunk_tokens=0 is not allowed"),
])
def test_reading_settings_are_checked(kwargs, message):
    with pytest.raises(SearchError, match=message):
        SearchConfig(target_length=512, **kwargs)


def test_a_candidate_reports_how_far_it_has_read(teaching_ci, tmp_path, monkeypatch):
    """Progress inside a candidate's documents (a 32k window takes minutes), as events and console lines."""
    from workbench.events import ConsoleSink, ListSink
    from workbench.search import processes as search_processes

    monkeypatch.setattr(search_processes, "READING_EVERY", 0.0)
    sink = ListSink()
    cfg = SearchConfig(**{**TINY, "generations": 1, "chunk_tokens": 128, "racing": "off"})
    run_search(teaching_ci.model, teaching_ci.tokenizer, cfg, tmp_path / "r", report=False, sink=sink)
    reading = sink.of_kind("search.reading")
    assert reading and all(0 < e.data["read"] < e.data["goal"] for e in reading)
    line = ConsoleSink().format(reading[0])
    assert f"init: candidate 1/{reading[0].data['of']} at 128 of" in line and "left for it" in line
