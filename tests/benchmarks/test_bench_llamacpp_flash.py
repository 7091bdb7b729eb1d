"""llama.cpp's flash attention on and off, against transformers: SmolLM2-135M at 12,288 tokens (beyond L0 = 8192,
where default, YaRN and LongRoPE separate), default / YaRN / LongRoPE (the searched 16k factors), one held-out
document: perplexity and seconds -> results/llamacpp_flash.json.

The question it answers: does flash attention keep the engines' parity (within 1 %, and the same ordering of the
methods), and how much faster does it read? The length can be changed with WORKBENCH_BENCH_LLAMACPP_LENGTH.
"""

from __future__ import annotations

import json
import os

import pytest

from workbench import llamacpp
from workbench.evaluate import perplexity
from workbench.gguf import export_gguf

from .llamacpp_cases import TOLERANCE, parity_cases

LENGTH = int(os.environ.get("WORKBENCH_BENCH_LLAMACPP_LENGTH", "12288"))


@pytest.mark.skipif(not llamacpp.available(), reason=llamacpp.INSTALL_HINT)
def test_llamacpp_flash_attention_keeps_parity(record, tmp_path):
    import llama_cpp

    lm, specs, docs, source = parity_cases(LENGTH)
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
