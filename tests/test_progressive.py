"""The progressive pipeline end to end on a tiny budget, resuming at the stage where it stopped."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from workbench.progressive import (
    ProgressiveConfig,
    ProgressiveError,
    run_progressive,
    stage_search_config,
)
from workbench.progressive_results import ProgressiveReport
from workbench.runs import RunFolder

TINY = ProgressiveConfig(
    stage1_length=512, stage2_length=1024,
    search1=dict(population=6, parents=3, mutants=2, crossovers=1, generations=1, n_hat_stage=False, n_documents=2),
    train=dict(steps=3, batch_size=2, lr=1e-3, warmup=1, checkpoint_every=2),
    search2=dict(population=4, parents=2, mutants=1, crossovers=1, generations=1, n_hat_stage=False, n_documents=1),
    recovery=dict(population=4, parents=2, mutants=1, crossovers=1, generations=1, n_hat_stage=False, n_documents=2),
    eval_documents=2)


def test_pipeline_runs_end_to_end_and_resumes(tmp_path):
    from transformers import AutoModelForCausalLM

    result = run_progressive("teaching-ci", TINY, tmp_path / "p", progress=False)
    assert set(result.stages) == {"search1", "finetune", "search2", "recovery", "final", "report"}
    r = result.report
    assert set(r.ppl) == {"no fine-tuning", "after stage 1", "after stage 2"}
    assert set(r.ppl["after stage 2"]) == {"256", "512", "1024"}
    assert set(r.short.ppl_at_L0) == {"original", "before recovery", "after recovery"}
    assert r.stage2_over_stage1 == r.ppl["after stage 2"]["1024"] / r.ppl["after stage 1"]["512"]
    assert r.summary().startswith(f"stage 2 at L2 / stage 1 at L1 = {r.stage2_over_stage1:.3f} (target <= 1.2); "
                                  "after recovery vs original at L0: ")
    assert r.markdown().count("| after stage 2 |") == 1 and "| before recovery |" in r.markdown()
    assert [f.layout.title.text for f in r.figures()] == ["Held-out perplexity by length", "Perplexity at L0 = 256"]
    saved = json.loads((tmp_path / "p" / "report.json").read_text())
    assert ProgressiveReport.from_dict(saved) == r and saved["met"] == r.met
    s1 = result.stages["search1"]["long_factor"]
    s2 = result.stages["search2"]["long_factor"]
    assert all(b >= a - 1e-9 for a, b in zip(s1, s2, strict=True))  # composed = stage 1 x stage 2 (>= 1)
    final = AutoModelForCausalLM.from_pretrained(result.final_dir)
    rp = final.config.rope_parameters
    assert rp["rope_type"] == "longrope" and rp["long_factor"] == pytest.approx(s2)
    assert rp["short_factor"] == pytest.approx(result.stages["recovery"]["short_factor"])
    # resuming a finished pipeline redoes nothing and reports the same
    again = run_progressive("teaching-ci", TINY, tmp_path / "p", progress=False)
    assert again.report == r
    # a pipeline interrupted after stage 1: remove everything after the search, rerun, same end result
    import shutil

    for d in ("02-finetune", "03-search2", "04-recovery", "final"):
        shutil.rmtree(tmp_path / "p" / d)
    (tmp_path / "p" / "report.json").unlink()
    third = run_progressive("teaching-ci", TINY, tmp_path / "p", progress=False)
    assert third.stages["search1"]["long_factor"] == s1 and third.report.ppl == r.ppl


def test_pipeline_refuses_other_settings_and_bad_lengths(tmp_path):
    folder = tmp_path / "q"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps({"model": "teaching-ci", "config": {"stage1_length": 9}}))
    with pytest.raises(ProgressiveError, match="written by an older workbench .*start a new run folder"):
        run_progressive("teaching-ci", TINY, folder, progress=False)  # the format before one params.json
    other = tmp_path / "o"
    RunFolder.open(other, "progressive", {"model": "teaching-ci", "config": replace(TINY, stage2_length=2048).to_dict()},
                   resume=False)
    with pytest.raises(ProgressiveError, match="made with different settings: config.stage2_length: 2048 in the "
                                               "folder, 1024 now$"):
        run_progressive("teaching-ci", TINY, other, progress=False)
    with pytest.raises(ProgressiveError, match="lengths must grow"):
        run_progressive("teaching-ci", ProgressiveConfig(stage1_length=1024, stage2_length=512), tmp_path / "r")


def test_a_stage_n_hat_the_next_stage_would_drop_is_refused():
    for name in ("search1", "search2"):
        with pytest.raises(ProgressiveError, match=f"{name}: n_hat_stage=True is not allowed: the next stage "
                                                   "composes the long factors only"):
            ProgressiveConfig.with_overrides(512, 1024, **{name: {"n_hat_stage": True}})
        # a budget that does not name the n_hat stage is accepted, and its stage searches no n_hat
        cfg = ProgressiveConfig(512, 1024, **{name: {"population": 8, "parents": 4, "mutants": 2, "crossovers": 2}})
        assert stage_search_config(cfg, 1024, getattr(cfg, name)).n_hat_stage is False


def test_with_overrides_updates_each_stage_budget_instead_of_replacing_it():
    cfg = ProgressiveConfig.with_overrides(512, 1024, train={"steps": 7}, search1={"generations": 2}, eval_documents=3)
    default = ProgressiveConfig(512, 1024)
    assert cfg.train == {**default.train, "steps": 7} and cfg.search1 == {**default.search1, "generations": 2}
    assert cfg.search2 == default.search2 and cfg.eval_documents == 3
