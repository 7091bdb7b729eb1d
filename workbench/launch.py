"""Run a parameterized notebook headless with papermill — in this process, or under ``accelerate launch``
with N processes / GPUs — and stream its progress from the run folder's events.

    workbench launch notebooks/05_progressive_extension.ipynb -p preset teaching --processes 2

Each process executes the notebook (its kernel inherits the launcher's distributed environment, so the
notebook's library calls share the work); rank 0's executed notebook is the one kept as ``<out>.ipynb``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .events import ConsoleSink, Event, read_events

# papermill's per-cell log lines (filtered from a launch's log and the demo's): the notebooks' own output is
# what a person wants to read
PAPERMILL_CHATTER = ("Executing Cell", "Ending Cell", "Executing notebook", "Input Notebook", "Output Notebook",
                     "<IPython.core.display", "PosixPath(", "[IPKernelApp] WARNING | Kernel is running over TCP")


class LaunchError(ValueError):
    """A launch request is invalid: missing notebook, no parameters cell, unknown parameter, bad process count."""


def declared_parameters(notebook: str | Path) -> dict[str, dict[str, Any]]:
    """The notebook's ``parameters`` cell: name -> {default, type, help}.

    Raises:
        LaunchError: the file does not exist or has no cell tagged ``parameters``.
    """
    import papermill as pm

    path = Path(notebook)
    if not path.exists():
        raise LaunchError(f"notebook {str(path)!r} does not exist")
    try:
        params = pm.inspect_notebook(str(path))
    except Exception as e:  # noqa: BLE001 - papermill raises several kinds for unreadable notebooks
        raise LaunchError(f"cannot read {str(path)!r} as a notebook: {e}") from None
    if not params:
        raise LaunchError(f"{str(path)!r} has no cell tagged 'parameters': papermill cannot set anything in it")
    return {name: {"default": p["default"], "type": p["inferred_type_name"], "help": p["help"]}
            for name, p in params.items()}


_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                                       "dict": (dict,), "list": (list, tuple)}


def check_parameters(notebook: str | Path, parameters: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every parameter must be declared by the notebook and have the declared (annotated) type.

    Raises:
        LaunchError: an undeclared name, or a value of another type (``True`` is not an int here).
    """
    declared = declared_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise LaunchError(f"parameter(s) {unknown} are not declared by {Path(notebook).name}; it declares: "
                          f"{', '.join(declared)}")
    wrong = []
    for name, value in parameters.items():
        kind = declared[name]["type"].split("[")[0]
        ok = _TYPES.get(kind)
        if ok is None:
            continue  # an annotation we do not check (None, a union, a custom class)
        if not isinstance(value, ok) or (kind != "bool" and isinstance(value, bool)):
            wrong.append(f"{name} must be {declared[name]['type']} (like {declared[name]['default']}), "
                         f"got {value!r}")
    if wrong:
        raise LaunchError("; ".join(wrong))
    return declared


def hardware(processes: int) -> dict[str, Any]:
    """What a launch will use, in words and facts."""
    gpus = torch.cuda.device_count()
    flash = importlib.util.find_spec("flash_attn") is not None
    if gpus:
        used = min(processes, gpus)
        words = f"{used} GPU process(es) of {gpus} GPU(s), " + ("flash-attn" if flash else "SDPA (flash-attn not installed)")
    else:
        words = f"{processes} CPU process(es) ({'gloo' if processes > 1 else 'no process group'}), SDPA" + (
            "; flash-attn is importable but needs a GPU" if flash else "")
    return {"gpus": gpus, "flash_attn": flash, "processes": processes, "words": words}


def accelerate_command(processes: int, python_args: list[str]) -> list[str]:
    """``accelerate launch`` of ``python <python_args>`` with ``processes`` processes on one machine.

    ``--multi_gpu`` together with ``ACCELERATE_USE_CPU`` (:func:`accelerate_env`) really starts N CPU processes
    on gloo; accelerate's ``--cpu`` would quietly start one.
    """
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    return [accelerate, "launch", "--num_processes", str(processes), "--num_machines", "1", "--multi_gpu",
            "--mixed_precision", "no", "--dynamo_backend", "no", *python_args]


def accelerate_env(processes: int) -> dict[str, str]:
    """The environment for :func:`accelerate_command`: on a machine without GPUs, N processes on the CPU."""
    env = dict(os.environ)
    if processes > 1 and torch.cuda.device_count() == 0:
        env["ACCELERATE_USE_CPU"] = "true"
    return env


@dataclass
class LaunchResult:
    notebook: str
    output: str
    returncode: int
    seconds: float
    hardware: dict[str, Any]
    events: int = 0
    log_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Launch:
    """A running (or finished) launch: a subprocess executing the notebook, and its run folder's events."""

    def __init__(self, notebook: str | Path, parameters: dict[str, Any], output: str | Path, *, processes: int = 1,
                 run_dir_parameter: str = "output_dir", on_event: Callable[[Event], None] | None = None,
                 on_line: Callable[[str], None] | None = None) -> None:
        if not isinstance(processes, int) or processes < 1:
            raise LaunchError(f"processes={processes!r} is not allowed: a positive integer")
        self.notebook = Path(notebook)
        declared = check_parameters(self.notebook, parameters)
        self.output = Path(output)
        self.params = dict(parameters)
        if run_dir_parameter in declared and run_dir_parameter not in self.params:
            self.params[run_dir_parameter] = str(self.output.with_suffix(""))
        if "live" in declared:
            self.params["live"] = False  # nobody watches a launched kernel's widgets
        self.run_dir = Path(self.params[run_dir_parameter]) if run_dir_parameter in self.params else None
        self.processes = processes
        self.hardware = hardware(processes)
        self.on_event, self.on_line = on_event, on_line
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.readers: list[threading.Thread] = []
        self.stopping = threading.Lock()  # held while stop() ends the processes (kernels may outlive the worker)
        self.events_seen = 0
        self.t0 = 0.0

    def command(self) -> list[str]:
        worker = ["-m", "workbench.launch", str(self.notebook), str(self.output), json.dumps(self.params)]
        return [sys.executable, *worker] if self.processes == 1 else accelerate_command(self.processes, worker)

    def start(self) -> Launch:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        env = accelerate_env(self.processes)
        self.t0 = time.time()
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, start_new_session=True)
        self.readers = [threading.Thread(target=self._read_output, daemon=True),
                        threading.Thread(target=self._watch_events, daemon=True)]
        for reader in self.readers:
            reader.start()
        return self

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip()
            if not line or "Kernel is running over TCP" in line or line.startswith(PAPERMILL_CHATTER):
                continue
            self.lines.append(line)
            if self.on_line:
                self.on_line(line)

    def _watch_events(self) -> None:
        if self.run_dir is None:
            return
        path = self.run_dir / "events.jsonl"
        while True:  # until the worker has ended and no kernel it started can still write (a stop is over)
            running = (self.proc is not None and self.proc.poll() is None) or self.stopping.locked()
            if path.exists():
                events = read_events(path)
                for e in events[self.events_seen:]:
                    if self.on_event:
                        self.on_event(e)
                self.events_seen = len(events)
            if not running:
                return
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop every process of the launch: the worker(s) and the notebook kernels they started.

        Kernels run in sessions of their own (jupyter_client starts them so), out of reach of the launch's
        process group; left alone they would go on training until they notice their parent is gone. So every
        descendant is collected first (once the parent dies they are re-parented and cannot be found), then
        all of them get SIGTERM, and SIGKILL if they are still there after 20 s.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        with self.stopping:
            self._end_processes()

    def _end_processes(self) -> None:
        import psutil  # a dependency of ipykernel, which papermill needs

        assert self.proc is not None
        try:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=20)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def wait(self, timeout: float | None = None) -> LaunchResult:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        output, events = self.readers
        events.join()  # its last read follows the end of every process, so no event arrives after this returns
        output.join(timeout=10)  # ends at EOF; a kernel left holding the pipe must not hang the caller: the bound
        return LaunchResult(str(self.notebook), str(self.output), code, time.time() - self.t0, self.hardware,
                            self.events_seen, self.lines[-20:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def launch(notebook: str | Path, parameters: dict[str, Any], output: str | Path, *, processes: int = 1,
           log: Callable[[str], None] = print) -> LaunchResult:
    """Run a notebook to completion, printing its progress (:class:`~workbench.events.ConsoleSink` lines for its
    run folder's events, ``| `` before the notebook's own output); see :class:`Launch`."""
    console = ConsoleSink(write=lambda line: log(f"  {line}"))
    job = Launch(notebook, parameters, output, processes=processes, on_event=console,
                 on_line=lambda line: log(f"| {line}"))
    log(f"launching {Path(notebook).name} -> {output} on {job.hardware['words']}")
    job.start()
    result = job.wait()
    log(f"{'done' if result.ok else 'FAILED'} in {result.seconds:.0f} s: {output}")
    return result


def _worker(notebook: str, output: str, params_json: str) -> int:
    """One process of a launch: execute the notebook with papermill (rank-suffixed output beyond rank 0)."""
    import logging

    import papermill as pm

    rank = int(os.environ.get("RANK", "0"))
    out = Path(output)
    if rank:
        out = out.with_name(f"{out.stem}.rank{rank}{out.suffix}")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    pm.execute_notebook(notebook, str(out), parameters=json.loads(params_json), kernel_name="python3",
                        log_output=rank == 0, progress_bar=False, store_widget_state=False,
                        cwd=str(Path(__file__).resolve().parent.parent))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(*sys.argv[1:4]))
