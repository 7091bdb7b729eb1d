"""`make demo` measured: its wall time, and whether the bf16 it uses on a bf16-capable CPU keeps
perplexity within 0.1 % of fp32 for the three settings it reads SmolLM2 with.

The demo picks bf16 (``dtype="auto"``) only where this CPU multiplies bf16 natively and fast; on an AVX2-only
CPU it runs fp32 and the comparison is recorded as not applicable.
"""

from __future__ import annotations

import json
import time

import pytest

from workbench.data import samples
from workbench.demo import DEMO_LENGTH, run_demo
from workbench.evaluate import compare_methods, resolve_dtype
from workbench.factors import load_factor_set
from workbench.hf import spec_for_model
from workbench.models import load_model


def test_demo_wall_time(record, tmp_path):
    t = time.time()
    assert run_demo(tmp_path / "demo") == 0
    wall = time.time() - t
    res = json.loads((tmp_path / "demo" / "02_interpolation_methods" / "results.json").read_text())
    record("demo", {"wall_seconds": wall, "target_seconds": 300, "dtype": res["dtype"], "length": DEMO_LENGTH,
                    "ppl": res["ppl"], "ppl_beyond_L0": res["ppl_beyond_L0"], "seconds": res["seconds"],
                    "command": "pytest tests/benchmarks/test_bench_demo.py --run-bench --timeout=0"})
    assert wall <= 300


def test_demo_bf16_stays_within_a_tenth_of_a_percent_of_fp32(record):
    if resolve_dtype("auto") != "bf16":
        record("demo_bf16", {"applicable": False, "reason": "this CPU runs the demo in fp32 (dtype auto = fp32)"})
        pytest.skip("this CPU runs the demo in fp32")
    lm = load_model("smollm2")
    docs = samples(lm.tokenizer, "shakespeare", "heldout", DEMO_LENGTH, 1, progress=False)
    specs = {"default": None, "yarn": spec_for_model(lm.model, "yarn", target_length=DEMO_LENGTH),
             "longrope (searched)": load_factor_set("smollm2-16k").spec}
    rows = {}
    for dtype in ("fp32", "bf16"):
        for r in compare_methods(lm.model, specs, docs, [DEMO_LENGTH], dtype=dtype, progress=False):
            rows.setdefault(r.label, {})[dtype] = {"ppl": r.ppl, "seconds": r.seconds}
    change = {k: v["bf16"]["ppl"] / v["fp32"]["ppl"] - 1 for k, v in rows.items()}
    record("demo_bf16", {"applicable": True, "length": DEMO_LENGTH, "rows": rows, "relative_change": change,
                         "target": "|bf16 / fp32 - 1| <= 0.001"})
    assert all(abs(c) <= 1e-3 for c in change.values()), change
