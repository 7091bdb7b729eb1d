"""What the llama.cpp benchmarks read: SmolLM2-135M with default RoPE, YaRN and LongRoPE (the searched 16k factors
of results/search_smollm2_16k_cpu.json, su attention factor), on one held-out Shakespeare document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.data import samples
from workbench.hf import spec_for_model
from workbench.models import load_model, smollm2_gguf_path

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 0.01  # relative PPL difference; tests/test_llamacpp.py measures and explains it


def parity_cases(length: int) -> tuple[Any, dict[str, Any], list[Any], Path]:
    """(the model, {name: spec or None}, the document, the source GGUF)."""
    lm = load_model("smollm2")
    factors = json.loads((RESULTS / "search_smollm2_16k_cpu.json").read_text())["best_factors"]
    specs = {"default": None, "yarn": spec_for_model(lm.model, "yarn", target_length=16384),
             "longrope": spec_for_model(lm.model, "longrope", target_length=16384, long_factor=factors)}
    docs = samples(lm.tokenizer, "shakespeare", "heldout", length, 1, progress=False)
    return lm, specs, docs, smollm2_gguf_path()
