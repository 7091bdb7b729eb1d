"""What the RoPE patch costs: patched vs stock SmolLM2 forwards (interleaved, medians) and the rotary module alone."""

from __future__ import annotations

import statistics
import time

import torch

from workbench.hf import spec_for_model
from workbench.models import load_model
from workbench.patch import find_rotary, patch

SPECS = {
    "yarn": {},
    "longrope (n_hat 64)": {"long_factor": [1.0] * 10 + [1.0 + 0.1 * i for i in range(22)], "n_hat": 64},
}


def test_patch_overhead_on_smollm2(record):
    lm = load_model("smollm2")
    model = lm.model
    ids = torch.randint(0, 49152, (1, 2048), generator=torch.Generator().manual_seed(0))
    specs = {name: spec_for_model(model, name.split()[0], target_length=16384, **p) for name, p in SPECS.items()}

    def forward() -> float:
        t = time.perf_counter()
        with torch.no_grad():
            model.model(input_ids=ids, use_cache=False)
        return time.perf_counter() - t

    forward()  # warm-up
    runs: dict[str, list[float]] = {"stock": [], **{name: [] for name in specs}}
    for _ in range(5):  # interleaved, so drift in machine speed hits every setting alike
        runs["stock"].append(forward())
        for name, spec in specs.items():
            with patch(model, spec):
                runs[name].append(forward())
    median = {k: statistics.median(v) for k, v in runs.items()}

    positions, x = torch.arange(2048)[None], torch.zeros(1)
    _, _, stock_rotary = find_rotary(model)

    def rotary_ms(module) -> float:
        module(x, positions)
        t = time.perf_counter()
        for _ in range(50):
            module(x, positions)
        return (time.perf_counter() - t) / 50 * 1000

    rotary = {"stock": rotary_ms(stock_rotary)}
    for name, spec in specs.items():
        with patch(model, spec) as p:
            rotary[name] = rotary_ms(p.rotary)
    ratios = {k: v / median["stock"] for k, v in median.items()}
    record("patch_overhead", {"tokens": 2048, "forward_seconds_median_of_5": median, "ratio_to_stock": ratios,
                              "rotary_module_ms": rotary})
    assert all(r < 1.10 for r in ratios.values()), ratios  # within timing noise of the stock forward
    assert all(ms < 0.01 * median["stock"] * 1000 for ms in rotary.values()), rotary  # < 1% of a forward
