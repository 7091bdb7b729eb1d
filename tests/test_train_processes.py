"""Real processes: training killed with SIGKILL resumes from its checkpoint to the same weights; two processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

ARGS = ["--model", "teaching-ci", "--method", "yarn", "--target", "512", "--seq-len", "512", "--steps", "8",
        "--batch-size", "2", "--lr", "1e-3", "--warmup", "2", "--checkpoint-every", "2", "--threads", "1", "--quiet"]


def _finetune(run_dir: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", "finetune", *ARGS, "--run-dir", str(run_dir), *extra],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from workbench.models import load_model

    load_model("teaching-ci")
    folder = tmp_path_factory.mktemp("ref") / "run"
    done = _finetune(folder)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


def _weights(folder: Path) -> dict:
    return load_file(folder / "model" / "model.safetensors")


def test_sigkill_then_resume_gives_the_same_weights(reference, tmp_path):
    folder = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "finetune", *ARGS, "--run-dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not list((folder / "checkpoints").glob("step-4")):  # killed after the step-4 checkpoint, mid-run
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() - t0 < 300
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not (folder / "model").exists()
    done = _finetune(folder, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed at step" in done.stdout
    a, b = _weights(reference), _weights(folder)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_two_processes_under_accelerate_launch(tmp_path):
    from workbench.launch import accelerate_command, accelerate_env

    folder = tmp_path / "two"
    done = subprocess.run(accelerate_command(2, ["-m", "workbench", "finetune", *ARGS, "--run-dir", str(folder)]),
                          capture_output=True, text=True, env=accelerate_env(2), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    assert json.loads((folder / "params.json").read_text())["world_size"] == 2
    steps = [json.loads(x)["data"] for x in (folder / "events.jsonl").read_text().splitlines() if "train.step" in x]
    assert len(steps) == 8 and steps[-1]["tokens"] == 8 * 2 * 2 * 512  # both processes' rows counted
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(folder / "model").config.rope_parameters["rope_type"] == "yarn"


TWO_RANKS = """
import json, os, sys
from workbench.hf import spec_for_model
from workbench.models import load_model
from workbench.runs import RunFolderError
from workbench.train import TrainConfig, finetune

busy, free = sys.argv[1], sys.argv[2]
lm = load_model("teaching-ci")
spec = spec_for_model(lm.model, "yarn", target_length=512)
cfg = TrainConfig(seq_len=512, steps=8, batch_size=2, warmup=2, checkpoint_every=2)
out = {}
try:
    finetune(lm.model, lm.tokenizer, spec, cfg, busy, progress=False)
except RunFolderError as e:
    out["refused"] = str(e)
asked = []
def stop():  # only process 0 is asked to stop (a widget's Stop button lives there)
    asked.append(1)
    return os.environ["RANK"] == "0" and len(asked) > 3
result = finetune(lm.model, lm.tokenizer, spec, cfg, free, progress=False, stop=stop)
out.update(stopped=result.stopped, steps=result.steps)
with open(os.path.join(os.path.dirname(free), "result-" + os.environ["RANK"] + ".json"), "w") as f:
    json.dump(out, f)
"""


def test_two_processes_are_refused_together_and_stop_together(tmp_path):
    """A busy folder refuses every process (none is left waiting in a collective), and a stop asked of process 0
    stops every process after the same step."""
    import json

    from workbench.launch import accelerate_command, accelerate_env
    from workbench.runs import folder_lock

    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    busy, free = tmp_path / "busy", tmp_path / "free"
    with folder_lock(busy, "a fine-tune"):  # another fine-tune works there
        done = subprocess.run(accelerate_command(2, [str(script), str(busy), str(free)]), capture_output=True,
                              text=True, env=accelerate_env(2), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((tmp_path / f"result-{rank}.json").read_text()) for rank in (0, 1)]
    for r in results:
        assert "in use by process" in r["refused"] and "(a fine-tune)" in r["refused"]
        assert r["stopped"] is True and r["steps"] == 3
    assert not (free / "model").exists() and (free / "checkpoints" / "step-2").exists()
