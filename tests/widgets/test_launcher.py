"""The fine-tune launcher widget: a form from the notebook's parameters, refusals shown in the status line,
and a real headless launch that draws the loss curve, can be stopped, and resumes when launched again."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("ipywidgets")

from widgets.launcher import FinetuneLauncher  # noqa: E402
from workbench.demo import NOTEBOOKS  # noqa: E402

NB = NOTEBOOKS / "05_progressive_extension.ipynb"
TINY_SEARCH = {"population": 4, "parents": 2, "mutants": 1, "crossovers": 1, "generations": 1, "n_documents": 1}


def test_form_mirrors_the_parameters_cell_and_refuses_bad_values(tmp_path):
    ui = FinetuneLauncher(NB, output=str(tmp_path / "o.ipynb"))
    assert "live" not in ui.fields and {"model", "stage1_multiple", "train", "output_dir"} <= set(ui.fields)
    assert ui.parameters()["stage1_multiple"] == 4 and ui.parameters()["model"] == "teaching"
    assert "CPU process" in ui.hardware.value
    ui.processes.value = 2
    assert "2 CPU process(es) (gloo)" in ui.hardware.value
    ui.fields["stage1_multiple"].value = "four"
    assert ui.launch() is None and "stage1_multiple must be int" in ui.status.value
    assert not ui.launch_button.disabled and ui.job is None


def _wait(cond, seconds, ui):
    t0 = time.time()
    while not cond():
        assert time.time() - t0 < seconds, ui.job.lines[-20:] if ui.job else ui.status.value
        time.sleep(0.1)


def test_launch_draws_loss_stops_and_resumes(tmp_path):
    run = tmp_path / "run"
    values = {"model": "teaching-ci", "stage1_multiple": 2, "stage2_multiple": 2, "eval_documents": 2,
              "search1": TINY_SEARCH, "search2": TINY_SEARCH, "recovery": TINY_SEARCH, "output_dir": str(run),
              "train": {"steps": 40, "batch_size": 1, "checkpoint_every": 2, "warmup": 1}}
    ui = FinetuneLauncher(NB, output=str(tmp_path / "05.ipynb"), values=values)
    job = ui.launch()
    assert job is not None and ui.launch_button.disabled and not ui.stop_button.disabled
    _wait(lambda: len(ui.steps) >= 3, 300, ui)  # the fine-tuning stage has started and reports its loss
    ui.stop()
    _wait(lambda: not ui.launch_button.disabled, 30, ui)
    assert ui.status.value.startswith("stopped after step") and not job.running and ui.link.value == ""
    assert f"after step {max(ui.losses)};" in ui.status.value
    assert (run / "02-finetune").exists() and not (run / "final").exists()
    # Stop stops everything, the notebook's kernel included: nothing writes to the run folder any more
    written = (run / "events.jsonl").stat().st_size
    time.sleep(4)
    assert (run / "events.jsonl").stat().st_size == written
    # every step the processes wrote before they ended is on the curve and in the status (none arrives later)
    written_steps = [json.loads(x)["data"]["step"] for x in (run / "events.jsonl").read_text().splitlines()
                     if json.loads(x)["kind"] == "train.step"]
    assert max(ui.losses) == max(written_steps) and len(ui.loss.traces[0]["x"]) == len(ui.steps)
    before = {s["step"]: s["loss"] for s in ui.steps}

    ui.launch()  # the same run folder: the pipeline resumes in the fine-tuning stage, from its checkpoint
    _wait(lambda: not ui.launch_button.disabled, 600, ui)
    assert ui.status.value.startswith("done"), ui.job.lines[-20:]
    assert "05.ipynb" in ui.link.value and (tmp_path / "05.ipynb").exists()
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    resumes = [e["data"]["step"] for e in events if e["kind"] == "train.resume"]
    assert len(resumes) == 1 and 2 <= resumes[0] <= max(before) and resumes[0] % 2 == 0
    steps = [s["step"] for s in ui.steps]
    assert steps == list(range(1, 41))  # the whole curve, each step once
    assert [t["name"] for t in ui.loss.traces] == ["loss"] and ui.loss.traces[0]["x"] == steps
    # training is a pure function of (seed, step): the redone steps have the losses they had before the stop
    redone = [k for k in before if k > resumes[0]]
    assert all(ui.losses[k]["loss"] == pytest.approx(before[k], rel=1e-5) for k in redone)
    results = json.loads((run / "results.json").read_text())
    assert set(results["ppl_at_L0"]) == {"original", "before recovery", "after recovery"}
