"""llama.cpp runs the exported GGUFs and reproduces transformers (marker ``llamacpp``: ``make test-llamacpp``).

Measured here (2 CPU cores, llama-cpp-python 0.3.36 built by ``make setup-llamacpp``, SmolLM2-135M Q4_1):

- How llama.cpp applies RoPE settings, at the logits of 256 tokens: ``rope_freqs.weight`` = 2 for every pair
  gives exactly (max |delta| 0.0) what the runtime ``rope_freq_scale=0.5`` gives; the GGUF key
  ``llama.rope.scaling.attn_factor = a`` exactly what the runtime ``yarn_attn_factor = a`` gives when YaRN is
  off; an exported YaRN GGUF exactly what the runtime YaRN flags give; and with YaRN on, the runtime
  ``yarn_attn_factor`` changes nothing (llama.cpp recomputes it: ``0.1 ln s + 1`` times the GGUF key).
- That factor multiplies cos and sin as transformers' ``attention_factor`` does: a LongRoPE GGUF with
  a = 1.2 is 0.29 nats (mean |delta logit|) from transformers with a = 1.2 and 1.41 from transformers without
  it (default RoPE: 0.17 between the engines).
- The tolerance: with default RoPE, 4 held-out documents of 2,048 tokens, llama.cpp's perplexity is +0.17 %
  of transformers' (per document -0.11 % .. +0.40 %; an f32 KV cache: +0.19 %, so not the f16 cache). Both
  engines hold the same Q4_1 numbers (transformers runs them dequantised to fp32); llama.cpp multiplies them
  with activations rounded to 8 bits (Q8_1), transformers in fp32.
- Beyond L0, one held-out document (henry-vi-part-3) of 12,288 tokens:

  | method | transformers PPL | llama.cpp PPL | difference |
  |---|---|---|---|
  | default | 31.656 | 31.763 | +0.34 % |
  | yarn (s = 2) | 29.863 | 29.947 | +0.28 % |
  | longrope (searched 16k factors, su attention factor) | 29.305 | 29.381 | +0.26 % |

  The largest difference seen anywhere is 0.42 % (one 2k document); TOLERANCE is 1 %, and the methods'
  gaps at this length (LongRoPE 1.9 % below YaRN, YaRN 5.7 % below default) are wider than it, so the
  ordering is checked too. At 11k default and YaRN are still within 0.3 % of each other: 12,288 is the
  shortest length where all three separate. The test makes six 12k forwards (a llama.cpp one took 93-97 s
  here); the 16k check is tests/benchmarks/test_bench_llamacpp.py.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from workbench import llamacpp
from workbench.cli import main
from workbench.gguf import export_gguf, llama_cpp_equivalent
from workbench.rope import make_spec, ramp_factors

pytestmark = [pytest.mark.llamacpp,
              pytest.mark.skipif(not llamacpp.available(), reason=llamacpp.INSTALL_HINT)]

GEOM = dict(head_dim=64, rope_theta=100000.0, original_max_position_embeddings=8192)
SEARCHED = json.loads((Path(__file__).parent / "benchmarks/results/search_smollm2_16k_cpu.json").read_text())[
    "best_factors"]
PARITY_LENGTH = 12288  # beyond L0 = 8192; the shortest where default, YaRN and LongRoPE clearly differ
TOLERANCE = 0.01  # |PPL_llama.cpp / PPL_transformers - 1|


@pytest.fixture(scope="module")
def smollm2():
    from workbench.models import load_model

    return load_model("smollm2")


@pytest.fixture(scope="module")
def source():
    from workbench.models import smollm2_gguf_path

    return smollm2_gguf_path()


def _doc(lm, n: int) -> torch.Tensor:
    from workbench.data import samples

    return samples(lm.tokenizer, "shakespeare", "heldout", n, 1, progress=False)[0].tokens


def _cpp_logits(path, ids, **kwargs) -> torch.Tensor:
    with llamacpp.LlamaCppModel(path, len(ids), **kwargs) as m:
        return m.logits(ids)


@torch.no_grad()
def _tf_logits(lm, ids, spec) -> torch.Tensor:
    from workbench.patch import patch

    with patch(lm.model, spec) if spec is not None else nullcontext():
        return lm.model(ids[None]).logits[0].float()


def test_metadata_and_runtime_settings_give_identical_logits(smollm2, source, tmp_path):
    ids = _doc(smollm2, 256)
    linear = make_spec("longrope", **GEOM, target_length=16384, long_factor=[2.0] * 32,
                       attention_policy="constant", attention_factor=1.0)
    freqs = _cpp_logits(export_gguf(linear, source, tmp_path / "freqs.gguf").path, ids)
    assert torch.equal(freqs, _cpp_logits(source, ids, rope_freq_scale=0.5))

    factors = ramp_factors(32, 9.6, 31, 1.0, 3.0)
    keyed = make_spec("longrope", **GEOM, target_length=16384, long_factor=factors, attention_policy="constant",
                      attention_factor=1.2)
    plain = make_spec("longrope", **GEOM, target_length=16384, long_factor=factors, attention_policy="constant",
                      attention_factor=1.0)
    plain_path = export_gguf(plain, source, tmp_path / "plain.gguf").path
    assert torch.equal(_cpp_logits(export_gguf(keyed, source, tmp_path / "keyed.gguf").path, ids),
                       _cpp_logits(plain_path, ids, yarn_attn_factor=1.2))

    yarn_path = export_gguf(make_spec("yarn", **GEOM, target_length=16384), source, tmp_path / "yarn.gguf").path
    yarn = _cpp_logits(yarn_path, ids)
    assert torch.equal(yarn, _cpp_logits(source, ids, rope_scaling_type=2, rope_freq_scale=0.5, yarn_orig_ctx=8192))
    assert torch.equal(yarn, _cpp_logits(yarn_path, ids, yarn_attn_factor=2.0))  # ignored while YaRN is on


def test_attention_factor_multiplies_cos_and_sin_as_in_transformers(smollm2, source, tmp_path):
    ids = _doc(smollm2, 256)
    factors = ramp_factors(32, 9.6, 31, 1.0, 3.0)

    def spec(a):
        return make_spec("longrope", **GEOM, target_length=16384, long_factor=factors, attention_policy="constant",
                         attention_factor=a)

    cpp = _cpp_logits(export_gguf(spec(1.2), source, tmp_path / "a.gguf").path, ids)
    with_factor = (cpp - _tf_logits(smollm2, ids, llama_cpp_equivalent(spec(1.2)))).abs().mean()
    without = (cpp - _tf_logits(smollm2, ids, llama_cpp_equivalent(spec(1.0)))).abs().mean()
    default = (_cpp_logits(source, ids) - _tf_logits(smollm2, ids, None)).abs().mean()
    # measured: 0.29, 1.41 and 0.17 nats
    assert with_factor < 2 * default < without / 2


def test_engine_parity_beyond_L0(smollm2, source, tmp_path):
    from workbench.data import samples
    from workbench.evaluate import perplexity

    specs = {"default": None, "yarn": make_spec("yarn", **GEOM, target_length=16384),
             "longrope": make_spec("longrope", **GEOM, target_length=16384, long_factor=SEARCHED)}
    docs = samples(smollm2.tokenizer, "shakespeare", "heldout", PARITY_LENGTH, 1, progress=False)
    ppl = {}
    for name, spec in specs.items():
        tf = perplexity(smollm2.model, docs, spec=spec, label=name, length=PARITY_LENGTH, progress=False)
        path = source if spec is None else export_gguf(spec, source, tmp_path / f"{name}.gguf").path
        cpp = llamacpp.perplexity(path, docs, label=name, length=PARITY_LENGTH, progress=False)
        assert cpp.length == tf.length and len(cpp.per_position_nll) == len(tf.per_position_nll)
        ppl[name] = (tf.ppl, cpp.ppl)
    for name, (tf, cpp) in ppl.items():
        assert abs(cpp / tf - 1) < TOLERANCE, (name, ppl)
    by_tf = sorted(ppl, key=lambda n: ppl[n][0])
    assert by_tf == sorted(ppl, key=lambda n: ppl[n][1]), ppl
    assert by_tf[-1] == "default"  # beyond L0 without rescaling is worst in both engines


def test_cli_eval_ppl_with_the_llama_cpp_engine(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["eval", "ppl", "--engine", "llama.cpp", "--model", "smollm2", "--method", "yarn", "--target",
                 "16384", "--lengths", "256", "--n-documents", "1", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "yarn @ 256 [llama.cpp]: PPL" in out
    assert out.index("eval ppl: ~") < out.index("[llama.cpp]: PPL") and "(gguf-f16)" in out and "per 256-token forward" in out
    results = json.loads((run / "ppl.json").read_text())
    r = results[0] if isinstance(results, list) else results
    assert math.isfinite(r["ppl"]) and r["spec"]["method"] == "yarn" and "engine llama.cpp" in r["notes"][0]


def test_cli_llama_cpp_engine_refuses_what_cannot_fit_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(llamacpp, "calibrate", lambda *a, **k: pytest.fail("calibrated a refused request"))
    argv = ["eval", "ppl", "--engine", "llama.cpp", "--model", "smollm2", "--lengths", "8000000", "--n-documents", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refused before loading anything" in err and "gguf-f16, llama.cpp engine" in err
