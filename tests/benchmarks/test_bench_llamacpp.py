"""Engine parity at the real check's length: SmolLM2-135M at 16k tokens, default / YaRN / LongRoPE
(the searched 16k factors of results/search_smollm2_16k_cpu.json, su attention factor), each run by
transformers (dequantised fp32, SDPA, chunked loss) and by llama.cpp (the exported Q4_1 GGUF, llama-cpp-python,
f16 KV cache): perplexity and seconds -> results/llamacpp.json.

The length can be lowered with WORKBENCH_BENCH_LLAMACPP_LENGTH (the result records the one used).
"""

from __future__ import annotations

import json
import os

import pytest

from workbench import llamacpp
from workbench.evaluate import perplexity
from workbench.gguf import export_gguf

from .llamacpp_cases import TOLERANCE, parity_cases

LENGTH = int(os.environ.get("WORKBENCH_BENCH_LLAMACPP_LENGTH", "16384"))


@pytest.mark.skipif(not llamacpp.available(), reason=llamacpp.INSTALL_HINT)
def test_llamacpp_engine_parity_16k(record, tmp_path):
    import llama_cpp

    lm, specs, docs, source = parity_cases(LENGTH)
    rows = {}
    for name, spec in specs.items():
        tf = perplexity(lm.model, docs, spec=spec, label=name, length=LENGTH, progress=False)
        path = source if spec is None else export_gguf(spec, source, tmp_path / f"{name}.gguf").path
        cpp = llamacpp.perplexity(path, docs, label=name, length=LENGTH, progress=False)
        rows[name] = {"transformers": {"ppl": tf.ppl, "tail_ppl": tf.tail_ppl(), "seconds": tf.seconds},
                      "llama.cpp": {"ppl": cpp.ppl, "tail_ppl": cpp.tail_ppl(), "seconds": cpp.seconds},
                      "relative_difference": cpp.ppl / tf.ppl - 1}
        print(name, json.dumps(rows[name]), flush=True)
    order = {engine: sorted(rows, key=lambda n: rows[n][engine]["ppl"]) for engine in ("transformers", "llama.cpp")}
    record("llamacpp", {
        "length": LENGTH, "document": docs[0].label, "corpus": "shakespeare (held-out)",
        "llama_cpp_python": llama_cpp.__version__, "gguf": source.name, "kv_cache": "f16",
        "rows": rows, "order": order, "tolerance": TOLERANCE,
    })
    assert order["transformers"] == order["llama.cpp"]
    assert all(abs(r["relative_difference"]) < TOLERANCE for r in rows.values()), rows
