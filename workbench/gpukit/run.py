"""``gpu-run``: the steps in order, each with a time box, in one process tree, resumable from a journal.

The orchestrator (this module; standard library only, so it starts before anything is installed) runs the
steps in a worker process (``python -m workbench.gpukit worker``) that imports torch once and runs step
after step. A step that overruns its box is first asked to stop (its loops see their deadline and keep
what they measured), then, if it does not, the worker and everything it started are killed; the step is
recorded as ``overran`` with its partial results and the next step starts in a fresh worker. A failed
step likewise gets a fresh worker for the next one (a broken CUDA context must not spoil the rest).

Each invocation of ``run`` (a "call" in the journal) has a time budget (``--budget-s``). The work folder holds
``journal.jsonl`` (one line per call, step start and step end), ``steps/`` (each step's record), the run folders
of the search, the training and the notebook, ``gpu.json`` and ``gpu.log``. A second call with the same work
folder skips finished steps and starts at the first unfinished one; those that resume internally (search journal,
training checkpoints, the notebook's stages) continue where they stopped. The output folder gets copies of
gpu.json, gpu.log, the journal and the executed notebook after every step (keep ``--work`` apart from ``--out``,
e.g. ``.gpukit/work``, where the output folder is emptied between runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .bundle import PACK_DIR, REPO, KitError, models_dir, site_dir
from .context import NOTEBOOK, SENTINEL
from .presets import STEPS, KitPreset
from .report import summarize

JOURNAL, LOG, RESULT, PRESET_FILE = "journal.jsonl", "gpu.log", "gpu.json", "preset.json"
MIN_BOX_S = 5.0  # a step given less than this in a call is left for the next call
STOP_WAIT_S = 15.0  # after SIGTERM, before the worker's tree is killed


def grace(box: float) -> float:
    """Seconds past its box a step gets to end by itself (its loops check the deadline between forwards)."""
    return min(30.0, 5.0 + 0.1 * box)


class Journal:
    """Append-only JSONL of calls, step starts and step ends; a torn last line (a killed write) is skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def append(self, **entry: Any) -> None:
        entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **entry}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def finished(self) -> dict[str, dict[str, Any]]:
        return {e["step"]: e for e in self.entries() if e.get("event") == "end"}


class Log:
    """Lines to stdout and to ``gpu.log``, each with the seconds since this call began and the step."""

    def __init__(self, path: Path, t0: float) -> None:
        self.path, self.t0 = path, t0
        self.lock = threading.Lock()
        self.file = path.open("a", encoding="utf-8")

    def __call__(self, message: str, step: str = "gpu-run") -> None:
        line = f"[{time.time() - self.t0:6.1f}s {step:>8}] {message.rstrip()}"
        with self.lock:
            print(line, flush=True)
            self.file.write(line + "\n")
            self.file.flush()

    def raw(self, text: str) -> None:
        with self.lock:
            print(text, flush=True)
            self.file.write(text + "\n")
            self.file.flush()

    def close(self) -> None:
        self.file.close()


class Worker:
    """A ``workbench.gpukit worker`` process: steps go in on stdin, output comes back line by line."""

    def __init__(self, preset: KitPreset, work: Path, pack_dir: Path | None, log: Log) -> None:
        (work / PRESET_FILE).write_text(json.dumps(preset.to_dict(), indent=1))
        cmd = [sys.executable, "-m", "workbench.gpukit", "worker", "--preset", str(work / PRESET_FILE), "--work",
               str(work)]
        if pack_dir is not None:
            cmd += ["--pack", str(pack_dir)]
        env = dict(os.environ)
        paths = [str(REPO)] + ([str(site_dir(pack_dir)), str(models_dir(pack_dir))] if pack_dir is not None else [])
        env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.update(PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1",
                   HF_HUB_DISABLE_PROGRESS_BARS="1")
        if preset.device == "cuda":
            env.setdefault("WORKBENCH_TRIM_FROM", str(10**12))  # trimming the C heap is for long CPU forwards
        self.log, self.step = log, "worker"
        self.ends: queue.Queue[str] = queue.Queue()
        self.tail: list[str] = []
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, cwd=REPO, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(SENTINEL):
                self.ends.put(line.split()[-1])
                continue
            for part in line.rstrip("\n").split("\r"):
                if part.strip():
                    self.tail = (self.tail + [part])[-20:]
                    self.log(part, self.step)
        self.ends.put("")  # end of output: the process is gone

    def send(self, step: str, deadline: float) -> None:
        assert self.proc.stdin is not None
        self.step = step
        self.proc.stdin.write(json.dumps({"step": step, "deadline": deadline}) + "\n")
        self.proc.stdin.flush()

    def wait_end(self, timeout: float) -> str | None:
        """The step's status when it ends within ``timeout``; "" if the worker died; None on timeout."""
        try:
            return self.ends.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)

    def kill_tree(self) -> None:
        """Kill the worker and every process it started (the notebook's kernel runs in a session of its own)."""
        procs = []
        try:
            import psutil

            with contextlib.suppress(psutil.NoSuchProcess):
                procs = psutil.Process(self.proc.pid).children(recursive=True)
        except ImportError:
            pass
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        for p in procs:
            with contextlib.suppress(Exception):
                p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill_tree()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def compose(preset: KitPreset, work: Path, journal: Journal) -> dict[str, Any]:
    """``gpu.json``: the kit's settings, every call, and each step's status, box, seconds and result."""
    entries = journal.entries()
    starts = {e["step"]: e for e in entries if e.get("event") == "start"}
    ends = {e["step"]: e for e in entries if e.get("event") == "end"}
    steps: dict[str, Any] = {}
    for s in STEPS:
        rec = _read(work / "steps" / f"{s}.json") if s in ends else None
        if rec is None:
            partial = _read(work / "steps" / f"{s}.partial.json")
            rec = {"status": "interrupted" if s in starts else "pending"}
            if partial:
                rec["result"] = partial
        if s in starts:
            rec["box_s"] = starts[s].get("box_s")
        steps[s] = rec
    calls = [e for e in entries if e.get("event") == "call"]
    for c in calls:
        c["steps_started"] = [e["step"] for e in entries if e.get("event") == "start" and e.get("call") == c["call"]]
    return {"kit": {"preset": preset.name, "model": preset.model, "device": preset.device,
                    "budget_s_per_call": preset.budget_s, "boxes": preset.boxes, "calls": calls,
                    "updated": time.strftime("%Y-%m-%d %H:%M:%S")},
            "steps": steps, "summary": summarize(steps)}


def _publish(preset: KitPreset, work: Path, out: Path, journal: Journal) -> dict[str, Any]:
    data = compose(preset, work, journal)
    tmp = work / f".{RESULT}.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, work / RESULT)
    if out.resolve() != work.resolve():
        out.mkdir(parents=True, exist_ok=True)
        for name in (RESULT, LOG, JOURNAL):
            if (work / name).exists():
                shutil.copy2(work / name, out / name)
    executed = work / "notebook" / NOTEBOOK.name
    if executed.exists() and out.resolve() != work.resolve():
        shutil.copy2(executed, out / NOTEBOOK.name)
    return data


def check_steps(steps: list[str] | None) -> list[str]:
    """The steps to run, in order. Raises KitError for an unknown name."""
    if not steps:
        return list(STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise KitError(f"unknown step {unknown[0]!r}: one of {', '.join(STEPS)}")
    return [s for s in STEPS if s in steps]


def _open_work(preset: KitPreset, work: Path, fresh: bool, pack_dir: Path | None) -> tuple[Journal, list[dict]]:
    """The work folder's journal and its earlier calls (cleared with ``fresh``); refuses another preset's folder."""
    work.mkdir(parents=True, exist_ok=True)
    journal = Journal(work / JOURNAL)
    if fresh:
        for name in (JOURNAL, RESULT, LOG):
            with contextlib.suppress(FileNotFoundError):
                (work / name).unlink()
        for name in ("steps", "search", "train", "notebook"):
            shutil.rmtree(work / name, ignore_errors=True)
    calls = [e for e in journal.entries() if e.get("event") == "call"]
    if calls and calls[0].get("preset") != preset.name:
        raise KitError(f"{work} holds a gpu-run of the {calls[0].get('preset')!r} preset, not {preset.name!r}: use "
                       "another folder or --fresh")
    if pack_dir is not None:  # exist before the worker starts, so its imports see what setup installs there
        site_dir(pack_dir).mkdir(parents=True, exist_ok=True)
        models_dir(pack_dir).mkdir(parents=True, exist_ok=True)
    return journal, calls


def _run_step(worker: Worker, step: str, box: float, work: Path, log: Log) -> dict[str, Any]:
    """Have the worker run ``step`` within ``box`` seconds (stopped, then killed, past its grace); its record."""
    for stale in (f"{step}.json", f"{step}.partial.json"):  # from a call that was killed mid-step
        with contextlib.suppress(FileNotFoundError):
            (work / "steps" / stale).unlink()
    started = time.time()
    try:
        worker.send(step, started + box)
        status = worker.wait_end(box + grace(box))
    except (BrokenPipeError, OSError):  # the worker died before it took the step
        status = ""
    stopped = killed = False
    if status is None:
        log(f"still running {grace(box):.0f} s past its box: asking it to stop", step)
        worker.terminate()
        stopped = True
        status = worker.wait_end(STOP_WAIT_S)
        if status is None:
            log("did not stop: killing the worker and everything it started", step)
            worker.kill_tree()
            killed = True
    path = work / "steps" / f"{step}.json"
    record = _read(path)
    if record is None or killed or not status:
        partial = _read(work / "steps" / f"{step}.partial.json")
        if stopped:  # stopped or killed by us: it overran, whatever state it died in
            why = f"stopped {time.time() - started:.0f} s after it started (box {box:.0f} s)"
        else:
            worker.proc.poll()
            why = (f"the worker process died (exit {worker.proc.returncode}): "
                   + (worker.tail[-1] if worker.tail else "no output"))
        record = {"status": "overran" if stopped else "failed", "error": why, "result": partial,
                  "seconds": time.time() - started}
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(record, indent=1, default=str))
    if record["seconds"] > box:  # done in its grace period, or stopped late: either way over the box
        record["over_box_s"] = round(record["seconds"] - box, 1)
        path.write_text(json.dumps(record, indent=1, default=str))
    return record


def _end_call(worker: Worker | None, completed: bool, preset: KitPreset, work: Path, out: Path, journal: Journal,
              log: Log) -> None:
    """Close the worker (kill its tree if the call did not complete), publish the results, close the log."""
    if worker is not None:
        if completed:
            worker.close()
        else:
            worker.kill_tree()
    data = _publish(preset, work, out, journal)
    if completed:
        log.raw("\n".join(["", "## gpu-run summary", "", *data["summary"]]))
        log(f"wrote {out / RESULT} and {out / LOG}")
    log.close()


def run(preset: KitPreset, out: Path, work: Path | None = None, *, budget_s: float | None = None,
        steps: list[str] | None = None, fresh: bool = False, pack_dir: Path | None = None) -> int:
    """Run (or resume) the steps; returns 0 when every selected step is done, 1 otherwise.

    Raises:
        KitError: an unknown step, or a work folder made by another preset.
    """
    selected = check_steps(steps)
    out, work = Path(out), Path(work) if work is not None else Path(out)
    if pack_dir is None and preset.device == "cuda":
        pack_dir = REPO / PACK_DIR
    budget = float(budget_s if budget_s is not None else preset.budget_s)
    if budget <= 0:
        raise KitError(f"--budget-s {budget:g} is not allowed: a positive number of seconds")
    journal, calls = _open_work(preset, work, fresh, pack_dir)
    t0 = time.time()
    log = Log(work / LOG, t0)
    call = len(calls) + 1
    finished = journal.finished()
    todo = [s for s in selected if s not in finished]
    journal.append(event="call", call=call, preset=preset.name, budget_s=budget, steps=selected,
                   resumed_at=todo[0] if todo and finished else None, argv=sys.argv[1:])
    log(f"call {call}: preset {preset.name} ({preset.model} on {preset.device}), budget {budget:.0f} s, work {work}, "
        f"out {out}" + (f"; resuming at {todo[0]}" if todo and finished else ""))
    for s in selected:
        if s in finished:
            log(f"skip {s}: {finished[s]['status']} in an earlier call")
    worker: Worker | None = None
    statuses = {s: finished[s]["status"] for s in selected if s in finished}
    completed = False
    try:
        for i, step in enumerate(todo):
            left = budget - (time.time() - t0)
            nominal = [preset.boxes[s] for s in todo[i:]]
            box = preset.boxes[step] * min(1.0, left / sum(nominal))
            if box < min(MIN_BOX_S, preset.boxes[step]):  # the call's budget is spent, not the step's box
                log(f"out of time in this call: {', '.join(todo[i:])} still to run; the same command resumes there")
                journal.append(event="out_of_time", call=call, pending=todo[i:])
                break
            if worker is None or worker.proc.poll() is not None:
                worker = Worker(preset, work, pack_dir, log)
            journal.append(event="start", call=call, step=step, box_s=round(box, 1))
            log(f"start (box {box:.0f} s)", step)
            record = _run_step(worker, step, box, work, log)
            statuses[step] = record["status"]
            journal.append(event="end", call=call, step=step, status=record["status"],
                           seconds=round(record["seconds"], 1))
            log(f"{record['status']} in {record['seconds']:.1f} s" + (f": {record['error']}" if record.get("error") else ""),
                step)
            if record["status"] != "done":  # the next step gets a fresh worker (and a clean CUDA context)
                worker.close()
                worker = None
            _publish(preset, work, out, journal)
        completed = True
    except KeyboardInterrupt:
        log("interrupted: the same command resumes at the unfinished step")
        raise
    finally:
        _end_call(worker, completed, preset, work, out, journal, log)
    return 0 if all(statuses.get(s) == "done" for s in selected) else 1
