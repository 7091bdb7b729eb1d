"""What the long commands share: the pre-flight estimate, the console's progress lines, the run folder an
evaluation writes lazily, and the process group under ``accelerate launch``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..events import ConsoleSink
from .args import CliError


def preflight(args: argparse.Namespace, job: str, forwards: list[tuple[int, int]], *, engine: str = "window",
              dtype: str = "fp32", batch: int = 1, chunk: int = 4096, remedy: str = "", kept: int = 0) -> Any:
    """The job's estimate from the model's config alone; refused here, before any weight is loaded, when its peak
    memory exceeds what the machine has (unless --force). ``forwards`` are those left to run, ``kept`` those a
    resumed job reads from its journal."""
    from ..estimate import Estimate, Shape, TooLarge, check_fits
    from ..evaluate import resolve_dtype
    from ..models import load_model_config

    try:
        cfg = load_model_config(args.model)
    except ValueError:
        return None  # loading the model says what is wrong with it
    try:
        shape = Shape.from_config(cfg)
    except ValueError as e:
        print(f"no estimate: {e}", flush=True)
        return None
    est = Estimate(job, shape, resolve_dtype(dtype), engine, tuple((L, n) for L, n in forwards if n), batch, chunk,
                   kept=kept)
    if not est.forwards:
        return None
    try:
        check_fits(est, force=getattr(args, "force", False), remedy=remedy)
    except TooLarge as e:
        raise CliError(str(e)) from None
    return est


def announce(est: Any, model: Any) -> Any:
    """Measure (or read the cached) rates of this machine for the model, print the estimate's line."""
    if est is None:
        return None
    from ..estimate import calibrate

    est = est.with_rates(calibrate(model, est.dtype))
    print(est.line(), flush=True)
    return est


def sinks(run: Any, estimate: Any = None) -> Any:
    """The run folder's sink and the console's progress lines (with the time left when the estimate counts the
    forwards)."""
    from ..events import fan_out

    console = ConsoleSink(forwards=estimate.count if estimate is not None else None)
    return fan_out([run.sink if run else None, console])


class LazyRun:
    """A run folder written at its first event or result: after the library's own up-front checks, so a refused
    command leaves nothing behind."""

    def __init__(self, path: str, params: dict[str, Any], spec: Any = None) -> None:
        self.path, self.params, self.spec, self._folder = Path(path), params, spec, None

    def _get(self) -> Any:
        from ..runs import RunFolder

        if self._folder is None:
            self._folder = RunFolder(self.path, self.params, self.spec)
        return self._folder

    def sink(self, event: Any) -> None:
        self._get().sink(event)

    def write(self, name: str, data: Any) -> Path:
        return self._get().write(name, data)


def run_folder(args: argparse.Namespace, spec: Any = None, *, dest: str = "run_dir",
               params: dict[str, Any] | None = None) -> LazyRun | None:
    """The one run-folder policy of one-shot commands: the folder named by ``dest`` (when given), with the
    command's arguments as its params.json, written only once every argument has been checked."""
    path = getattr(args, dest, None)
    if not path:
        return None
    return LazyRun(path, params if params is not None else {k: v for k, v in vars(args).items() if k != "func"},
                   spec)


def accelerator() -> Any:
    """Under accelerate launch / torchrun: an Accelerator (it initialises the process group), else None."""
    from .. import distributed

    if not distributed.launched():
        return None
    import torch
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())
