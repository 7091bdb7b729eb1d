"""A fine-tune run folder is data, never code: checkpoints load weights-only, and a damaged newest one falls back."""

from __future__ import annotations

import os
import pickle
import shutil

import pytest
import torch

from workbench.hf import spec_for_model
from workbench.models import load_model
from workbench.train import TrainConfig, TrainError, finetune, load_checkpoint_state


class _Payload:
    """Unpickling this runs ``os.system(command)``: what a hostile ``state.pt`` would carry."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _plant(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"model": _Payload(f"touch {marker}"), "optimizer": {}, "step": 2}, f)


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """A real 3-step fine-tune stopped after 2 steps (checkpoints after steps 1 and 2), copied per test."""
    lm = load_model("teaching-ci")
    spec = spec_for_model(lm.model, "yarn", target_length=512)
    folder = tmp_path_factory.mktemp("ft") / "run"
    calls = []

    def stop():  # asked before every step: let two run
        calls.append(1)
        return len(calls) > 2

    result = finetune(lm.model, lm.tokenizer, spec, CFG, folder, progress=False, stop=stop)
    assert result.stopped
    return folder, spec


CFG = TrainConfig(seq_len=512, steps=3, batch_size=1, lr=1e-4, warmup=0, checkpoint_every=1)


def _resume(folder, spec):
    lm = load_model("teaching-ci")
    return finetune(lm.model, lm.tokenizer, spec, CFG, folder, resume=True, progress=False)


def test_the_newest_two_checkpoints_are_kept(genuine):
    folder, _ = genuine
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["step-1", "step-2"]


def test_a_pickled_payload_is_refused_and_never_runs(genuine, tmp_path):
    marker = tmp_path / "pwned"
    _plant(tmp_path / "state.pt", marker)
    with pytest.raises(TrainError, match="is not a loadable checkpoint"):
        load_checkpoint_state(tmp_path / "state.pt")
    assert not marker.exists()
    # a whole run folder whose checkpoints all carry the payload: refused, nothing executed
    folder, spec = genuine
    bad = tmp_path / "run"
    shutil.copytree(folder, bad)
    for ck in (bad / "checkpoints").iterdir():
        _plant(ck / "state.pt", marker)
    with pytest.raises(TrainError, match="no checkpoint of this run loads"):
        _resume(bad, spec)
    assert not marker.exists()


def test_a_genuine_checkpoint_still_resumes(genuine, tmp_path):
    folder, spec = genuine
    run = tmp_path / "run"
    shutil.copytree(folder, run)
    result = _resume(run, spec)
    assert result.resumed_from == 2 and result.steps == 3


@pytest.mark.parametrize("damage", ["truncate", "payload"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(genuine, tmp_path, damage):
    folder, spec = genuine
    run = tmp_path / "run"
    shutil.copytree(folder, run)
    newest = run / "checkpoints" / "step-2" / "state.pt"
    if damage == "truncate":
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    else:
        _plant(newest, tmp_path / "pwned")
    with pytest.warns(UserWarning, match="falling back to an earlier checkpoint"):
        result = _resume(run, spec)
    assert result.resumed_from == 1 and result.steps == 3
    assert not (tmp_path / "pwned").exists()


def test_a_non_checkpoint_file_is_named(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "state.pt")
    with pytest.raises(TrainError, match="is not a workbench checkpoint"):
        load_checkpoint_state(tmp_path / "state.pt")
