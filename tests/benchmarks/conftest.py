"""Benchmark fixtures; benchmarks run only with --run-bench (make bench) and write results/<name>.json."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import pytest
import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    import transformers

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


@pytest.fixture()
def record():
    """record(name, data): write results/<name>.json with the machine description."""

    def write(name: str, data: dict) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps({"machine": machine(), **data}, indent=1))
        return path

    return write
