"""The progressive pipeline, measured: the teaching model's default CPU pipeline
(L0 256 -> stage 1 at 1024, fine-tuned -> stage 2 at 8192 without training -> recovery at 256).

Records wall time per stage (from the run's events, so a resumed run still reports the stages' own times),
held-out perplexity at each length for no fine-tuning / after stage 1 / after stage 2, perplexity at L0 of
the original model, before and after recovery, and the two targets: stage 2 at L2 within 1.2x of stage 1
at L1, and recovery within 2% of the original model at L0.
"""

from __future__ import annotations

import time
from pathlib import Path

from workbench.events import read_events
from workbench.progressive import ProgressiveConfig, run_progressive

OUT = Path(__file__).parent / "results" / "progressive_runs"


def test_teaching_default_pipeline(record):
    folder = OUT / "teaching-1024-8192"
    t = time.time()
    result = run_progressive("teaching", ProgressiveConfig(stage1_length=1024, stage2_length=8192), folder)
    assert result is not None
    stage_seconds: dict[str, float] = {}
    for e in read_events(folder / "events.jsonl"):  # every call's events; a resumed call adds ~0 for done stages
        if e.kind == "progressive.stage":
            stage_seconds[e.data["stage"]] = stage_seconds.get(e.data["stage"], 0.0) + e.data["stage_seconds"]
    r = result.report
    record("progressive_teaching", {
        "config": ProgressiveConfig(stage1_length=1024, stage2_length=8192).to_dict(),
        "wall_seconds_this_call": time.time() - t, "stage_seconds": stage_seconds,
        "pipeline_seconds": sum(stage_seconds.values()),
        **r.results(heldout_documents=r.documents), "finetune": result.stages["finetune"],
        "factors": {"stage1": result.stages["search1"]["long_factor"], "composed": result.stages["search2"]["long_factor"],
                    "short": result.stages["recovery"]["short_factor"]}})
    assert not r.not_finite
