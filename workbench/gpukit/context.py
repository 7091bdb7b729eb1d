"""What every step of ``gpu-run`` shares: its context (preset, folders, deadline, partial results), the stop
signal, and the helpers that load the model, warm it up, and write JSON atomically."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..events import jsonable
from .bundle import REPO
from .presets import KitPreset

SENTINEL = "@@gpukit-step-end@@"
STOP = threading.Event()  # set by SIGTERM: the orchestrator wants this step to end now
CLEANUPS: list[Callable[[], None]] = []  # run if the orchestrator dies: stop what a step started elsewhere
RECORDED = REPO / "tests" / "benchmarks" / "results" / "evaluation.json"
NOTEBOOK = REPO / "notebooks" / "05_progressive_extension.ipynb"


class StepError(Exception):
    """A step cannot do its work; one line."""


class StepContext:
    """What a step knows: its preset, folders and deadline; where it saves (partial) results."""

    def __init__(self, name: str, preset: KitPreset, work: Path, deadline: float, pack_dir: Path | None) -> None:
        self.name, self.preset, self.work, self.deadline, self.pack_dir = name, preset, work, deadline, pack_dir
        self.partial: dict[str, Any] = {}
        self.cut_short = False
        self.t0 = time.time()

    def left(self) -> float:
        return self.deadline - time.time()

    def stop(self) -> bool:
        """True once the box has run out (or the orchestrator asked to stop)."""
        return STOP.is_set() or time.time() >= self.deadline

    def log(self, message: str) -> None:
        print(message, flush=True)

    def save(self, result: dict[str, Any]) -> None:
        """Keep partial results on disk (read by the orchestrator if this process has to be killed)."""
        self.partial = result
        write_json(self.work / "steps" / f"{self.name}.partial.json", result)

    @property
    def cuda(self) -> bool:
        return self.preset.device == "cuda"

    def device(self) -> Any:
        import torch

        if self.cuda and not torch.cuda.is_available():
            raise StepError("the gpu preset needs CUDA, and torch.cuda.is_available() is False here "
                            "(on a CPU: make gpu-run GPU_TINY=1)")
        return torch.device(self.preset.device)

    def reset_peak(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float | None:
        """Peak GPU memory since :meth:`reset_peak` (None on the CPU: not measured per forward there)."""
        if not self.cuda:
            return None
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 1e9


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=jsonable))
    os.replace(tmp, path)


def torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def load_lm(ctx: StepContext, weights: str = "fp32", to_device: bool = True) -> Any:
    from workbench.models import load_model

    lm = load_model(ctx.preset.model, dtype=torch_dtype(weights))
    if to_device:
        lm.model.to(ctx.device())
    return lm


def ramp_spec(model: Any, target_length: int) -> Any:
    """A hand-made LongRoPE spec for ``target_length``: the ramp notebook 02 and the README use (factor 1 up
    to 30 % of the pairs, then linear to 1.5 s at the last pair); not a searched result."""
    from workbench.hf import model_geometry, spec_for_model
    from workbench.rope import ramp_factors

    g = model_geometry(model)
    n_pairs = g.head_dim // 2
    s = target_length / g.original_max_position_embeddings
    return spec_for_model(model, "longrope", target_length=target_length,
                          long_factor=ramp_factors(n_pairs, 0.3 * n_pairs, n_pairs - 1, 1.0, 1.5 * s))


def warm_up(model: Any, tokens: Any, dtype: str) -> None:
    """One short forward first, so kernel loading and handle creation stay out of the timings."""
    from workbench.evaluate import token_nll

    token_nll(model, tokens[: min(512, len(tokens))][None], dtype=dtype)


def free_memory() -> None:
    """Give the GPU memory of the step that ended back before the next one (they share this process)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
