"""llama.cpp's flash attention on and off, against transformers: SmolLM2-135M at 12,288 tokens (beyond L0 = 8192,
where default, YaRN and LongRoPE separate), default / YaRN / LongRoPE (the searched 16k factors), one held-out
document: perplexity and seconds -> results/llamacpp_flash.json.

The question it answers: does flash attention keep the engines' parity (within 1 %, and the same ordering of the
methods), and how much faster does it read? The length can be changed with WORKBENCH_BENCH_LLAMACPP_LENGTH.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from workbench import llamacpp
from workbench.data import samples
from workbench.evaluate import perplexity
from workbench.gguf import export_gguf
from workbench.hf import spec_for_model
from workbench.models import load_model, smollm2_gguf_path

RESULTS = Path(__file__).parent / "results"
LENGTH = int(os.environ.get("WORKBENCH_BENCH_LLAMACPP_LENGTH", "12288"))
TOLERANCE = 0.01  # relative PPL difference; tests/test_llamacpp.py measures and explains it


@pytest.mark.skipif(not llamacpp.available(), reason=llamacpp.INSTALL_HINT)
def test_llamacpp_flash_attention_keeps_parity(record, tmp_path):
    import llama_cpp

    lm = load_model("smollm2")
    factors = json.loads((RESULTS / "search_smollm2_16k_cpu.json").read_text())["best_factors"]
    specs = {"default": None, "yarn": spec_for_model(lm.model, "yarn", target_length=16384),
             "longrope": spec_for_model(lm.model, "longrope", target_length=16384, long_factor=factors)}
    docs = samples(lm.tokenizer, "shakespeare", "heldout", LENGTH, 1, progress=False)
    source = smollm2_gguf_path()
    rows = {}
    for name, spec in specs.items():
        tf = perplexity(lm.model, docs, spec=spec, label=name, length=LENGTH, progress=False)
        path = source if spec is None else export_gguf(spec, source, tmp_path / f"{name}.gguf").path
        row = {"transformers": {"ppl": tf.ppl, "seconds": tf.seconds}}
        for flash in (False, True):
            cpp = llamacpp.perplexity(path, docs, label=name, length=LENGTH, flash_attn=flash, progress=False)
            row[f"llama.cpp, flash attention {'on' if flash else 'off'}"] = {
                "ppl": cpp.ppl, "seconds": cpp.seconds, "relative_difference": cpp.ppl / tf.ppl - 1}
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    engines = list(next(iter(rows.values())))
    order = {e: sorted(rows, key=lambda n: rows[n][e]["ppl"]) for e in engines}
    speedup = {n: r["llama.cpp, flash attention off"]["seconds"] / r["llama.cpp, flash attention on"]["seconds"]
               for n, r in rows.items()}
    record("llamacpp_flash", {
        "length": LENGTH, "document": docs[0].label, "corpus": "shakespeare (held-out)",
        "llama_cpp_python": llama_cpp.__version__, "gguf": source.name, "kv_cache": "f16", "rows": rows,
        "order": order, "speedup_of_flash_attention": speedup, "tolerance": TOLERANCE,
    })
    assert len({tuple(o) for o in order.values()}) == 1, order
    for r in rows.values():
        assert all(abs(v["relative_difference"]) < TOLERANCE for k, v in r.items() if k != "transformers"), rows
