"""What the RoPE patch costs: a patched SmolLM2 forward against the stock one, same length."""

from __future__ import annotations

import time

import torch

from workbench.hf import spec_for_model
from workbench.models import load_model
from workbench.patch import patch


def _time(fn, repeats=3):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def test_patch_overhead_on_smollm2(record):
    lm = load_model("smollm2")
    ids = torch.randint(0, 49152, (1, 2048), generator=torch.Generator().manual_seed(0))
    backbone = lm.model.model

    def forward():
        with torch.no_grad():
            backbone(input_ids=ids, use_cache=False)

    stock = _time(forward)
    rows = {"stock": stock}
    for method, params in [("yarn", {}), ("longrope", {"long_factor": [1.0] * 10 + [1.0 + 0.1 * i for i in range(22)],
                                                         "n_hat": 64})]:
        with patch(lm.model, spec_for_model(lm.model, method, target_length=16384, **params)):
            rows[method] = _time(forward)
    ratios = {k: v / stock for k, v in rows.items()}
    record("patch_overhead", {"tokens": 2048, "seconds_best_of_3": rows, "ratio_to_stock": ratios})
    assert all(r < 1.10 for r in ratios.values()), ratios  # the patch must not slow the model down
