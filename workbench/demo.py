"""``make demo``: run the demo notebooks headless with papermill and collect what they produced.

The executed notebooks, their figures and a summary README go to the output folder (``runs/demo``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

DEMO: list[tuple[str, dict[str, Any]]] = [
    ("01_rope_frequencies", {"model": "smollm2", "target_length": 16384}),
    ("02_interpolation_methods", {"model": "smollm2", "lengths": [8192, 16384],
                                  "methods": ["default", "linear", "ntk", "yarn", "longrope"],
                                  "corpus": "shakespeare", "n_documents": 1, "dtype": "fp32",
                                  "entropy_methods": ["default", "yarn"], "entropy_rows": 8}),
]
QUICK: dict[str, dict[str, Any]] = {
    "01_rope_frequencies": {"model": "tiny-random", "target_length": 512},
    "02_interpolation_methods": {"model": "tiny-random", "lengths": [128, 256]},
}


def execute(name: str, params: dict[str, Any], out: Path, log: bool = True) -> Path:
    """Execute ``notebooks/<name>.ipynb`` headless into ``out/<name>.ipynb``; figures go to ``out/<name>/``."""
    import papermill as pm

    source = NOTEBOOKS / f"{name}.ipynb"
    target = out / f"{name}.ipynb"
    parameters = {**params, "live": False, "output_dir": str((out / name).resolve())}
    pm.execute_notebook(str(source), str(target), parameters=parameters, kernel_name="python3", log_output=log,
                        progress_bar=False, cwd=str(NOTEBOOKS.parent), store_widget_state=False)
    return target


# papermill's per-cell log lines (also filtered from a launch's log tail): the notebooks' own output is what
# a person wants to read
PAPERMILL_CHATTER = ("Executing Cell", "Ending Cell", "Executing notebook", "Input Notebook", "Output Notebook",
                     "<IPython.core.display", "PosixPath(")


def _quiet(record: logging.LogRecord) -> bool:
    """Keep the notebooks' own progress lines; drop papermill's per-cell chatter."""
    msg = record.getMessage().strip()
    return bool(msg) and not msg.startswith(PAPERMILL_CHATTER)


def run_demo(out: Path, quick: bool = False) -> int:
    """Run every demo notebook; print progress; write ``out/README.md``. Returns a process exit code."""
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    handler.addFilter(_quiet)
    pm_log = logging.getLogger("papermill")
    pm_log.addHandler(handler)
    pm_log.setLevel(logging.INFO)
    t0 = time.time()
    timings = {}
    for name, params in DEMO:
        params = QUICK[name] if quick else params
        print(f"[{time.time() - t0:5.0f}s] running {name} {json.dumps(params)}", flush=True)
        t = time.time()
        execute(name, params, out)
        timings[name] = time.time() - t
        print(f"[{time.time() - t0:5.0f}s] {name} done in {timings[name]:.0f} s -> {out / name}", flush=True)
    pm_log.removeHandler(handler)
    summary = _summary(out, timings, time.time() - t0, quick)
    (out / "README.md").write_text(summary)
    print(summary)
    return 0


def _summary(out: Path, timings: dict[str, float], total: float, quick: bool) -> str:
    lines = [f"# Demo run{' (quick: tiny random model)' if quick else ''}", "",
             f"Total {total / 60:.1f} min. Executed notebooks and figures:", ""]
    for name, secs in timings.items():
        figs = sorted(p.name for p in (out / name).glob("*.png"))
        lines.append(f"- `{name}.ipynb` ({secs:.0f} s): " + ", ".join(f"[{f}]({name}/{f})" for f in figs))
    table = out / "02_interpolation_methods" / "ppl_table.md"
    if table.exists():
        res = json.loads((out / "02_interpolation_methods" / "results.json").read_text())
        lines += ["", f"## Perplexity of {res['model']} on held-out {res['corpus']} ({', '.join(res['documents'])}), "
                      f"{res['dtype']}", "", table.read_text().strip(), "",
                  "Seconds are wall time of each forward on this machine; `(prefix)` rows are read off the longer "
                  "run (exact for a causal model with length-independent RoPE)."]
        evaluation = out / "02_interpolation_methods" / "evaluation_table.md"
        if evaluation.exists():
            lines += ["", "## Evaluation table (with attention entropy; figure: "
                          "[entropy.png](02_interpolation_methods/entropy.png))", "", evaluation.read_text().strip()]
    return "\n".join(lines) + "\n"
