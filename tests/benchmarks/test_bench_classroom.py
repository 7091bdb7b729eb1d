"""The classroom presets, measured: every notebook run the plain way (``papermill in.ipynb out.ipynb`` with the
preset's parameters and nothing else — no ``-p live False``) must finish in under a minute on 2 cores and write a
notebook under 2 MB whose figures are in it (PNG and plotly JSON, no widget state).

Run one notebook at a time on an otherwise quiet machine: ``pytest tests/benchmarks/test_bench_classroom.py
--run-bench --timeout=0``; results/classroom.json gets one row per notebook.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.demo import CLASSROOM, NOTEBOOKS, papermill_arguments, papermill_command

REPO = NOTEBOOKS.parent
PAPERMILL = Path(sys.executable).parent / "papermill"
LIMIT_SECONDS, LIMIT_BYTES = 60.0, 2_000_000
ROWS: dict[str, dict] = {}


def figures_in(notebook: Path) -> dict[str, int]:
    nb = json.loads(notebook.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    data = [o.get("data", {}) for o in outputs]
    return {"png": sum("image/png" in d for d in data),
            "plotly": sum("application/vnd.plotly.v1+json" in d for d in data),
            "widgets": sum("application/vnd.jupyter.widget-view+json" in d for d in data),
            "errors": sum(o.get("output_type") == "error" for o in outputs)}


@pytest.mark.parametrize("name", sorted(CLASSROOM))
def test_classroom_preset_runs_in_a_minute_and_shares_under_2_mb(name, tmp_path, record):
    out = tmp_path / f"{name}.ipynb"
    params = {**CLASSROOM[name], "output_dir": str(tmp_path / name)}
    t = time.time()
    proc = subprocess.run([str(PAPERMILL), str(NOTEBOOKS / f"{name}.ipynb"), str(out), *papermill_arguments(params)],
                          cwd=REPO, capture_output=True, text=True)
    seconds = time.time() - t
    assert proc.returncode == 0, proc.stderr[-3000:]
    size = out.stat().st_size
    figs = figures_in(out)
    ROWS[name] = {"seconds": round(seconds, 1), "output_bytes": size, "figures": figs,
                  "command": papermill_command(name, CLASSROOM[name])}
    record("classroom", {"limits": {"seconds": LIMIT_SECONDS, "output_bytes": LIMIT_BYTES},
                         "how": "papermill CLI, the preset's parameters only (live left automatic), one notebook at "
                                "a time, kernel start included",
                         "command": "pytest tests/benchmarks/test_bench_classroom.py --run-bench --timeout=0",
                         "notebooks": dict(sorted(ROWS.items()))})
    assert figs["errors"] == 0 and figs["widgets"] == 0 and figs["png"] > 0
    assert size < LIMIT_BYTES, f"{name}: {size / 1e6:.2f} MB"
    assert seconds < LIMIT_SECONDS, f"{name}: {seconds:.0f} s"
