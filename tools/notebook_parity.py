"""Run every notebook under its classroom preset and dump its results.json, to compare a change.

    python tools/notebook_parity.py /tmp/before.json      # on the old code
    python tools/notebook_parity.py /tmp/after.json       # on the new code
    python tools/notebook_parity.py --diff /tmp/before.json /tmp/after.json

Seconds, dates and the run's folder are masked; numbers are rounded to 6 significant digits, so two runs of the
same code compare equal. Not installed with the package: a maintainer's tool for refactors.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VOLATILE = re.compile(r"seconds|time|date|created|elapsed|tokens_per_second|wall", re.I)


def _clean(value, tmp: str):
    if isinstance(value, dict):
        return {k: "<masked>" if VOLATILE.search(k) else _clean(v, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, tmp) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, str):
        return value.replace(tmp, "{tmp}")
    return value


def run_all() -> dict:
    import papermill as pm

    sys.path.insert(0, str(ROOT))
    from workbench.demo import CLASSROOM

    out = {}
    with tempfile.TemporaryDirectory(prefix="nb-parity-") as tmp:
        for name in sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9]*.ipynb")):
            params = {**CLASSROOM.get(name, {}), "output_dir": f"{tmp}/{name}", "live": False}
            try:
                pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), f"{tmp}/{name}.ipynb",
                                    parameters=params, cwd=str(ROOT / "notebooks"), progress_bar=False,
                                    log_output=False, kernel_name="python3")
                res = Path(tmp) / name / "results.json"
                out[name] = _clean(json.loads(res.read_text()), tmp) if res.exists() else "no results.json"
            except Exception as e:  # noqa: BLE001 - the failure is what is compared
                out[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"{name}: {'ok' if isinstance(out[name], dict) else out[name]}", file=sys.stderr, flush=True)
    return out


def diff(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    changed = 0
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        if x == y:
            continue
        changed += 1
        if not (isinstance(x, dict) and isinstance(y, dict)):
            print(f"{name}: {x!r:.200} -> {y!r:.200}")
            continue
        for key in sorted(set(x) | set(y)):
            if x.get(key) != y.get(key):
                print(f"{name}.{key}: {json.dumps(x.get(key))[:200]} -> {json.dumps(y.get(key))[:200]}")
    print(f"{changed} of {len(set(a) | set(b))} notebooks differ")
    return 1 if changed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--diff", action="store_true")
    ns = parser.parse_args()
    if ns.diff:
        sys.exit(diff(*ns.paths))
    ns.paths[0].write_text(json.dumps(run_all(), indent=1))
