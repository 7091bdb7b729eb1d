"""Pre-flight estimates: memory from the config alone, time from rates measured here, refusals before loading."""

from __future__ import annotations

import pytest
import torch

from workbench import cli, estimate
from workbench.estimate import (
    Estimate,
    Rates,
    Shape,
    TooLarge,
    available_bytes,
    check_fits,
    forward_bytes,
)
from workbench.models import load_model, load_model_config


def test_the_shape_counts_the_weights_of_a_real_model():
    lm = load_model("teaching-ci")
    shape = Shape.from_config(lm.model.config.to_dict())
    assert shape.params == sum(p.numel() for p in lm.model.parameters())
    smol = Shape.from_config(load_model_config("smollm2"))
    assert (smol.layers, smol.hidden, smol.heads, smol.kv_heads, smol.head_dim) == (30, 576, 9, 3, 64)
    assert abs(smol.params - 134_515_008) < 1e5  # SmolLM2-135M, embeddings tied


def test_experts_count_in_memory_and_only_the_routed_ones_in_time():
    dense = Shape.from_config({"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
                               "intermediate_size": 128, "vocab_size": 100})
    moe = Shape.from_config({"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
                             "intermediate_size": 128, "vocab_size": 100, "num_local_experts": 8,
                             "num_experts_per_tok": 2})
    mlp = 3 * 64 * 128 * 2  # one MLP in each of the two layers
    assert moe.params - dense.params == 7 * mlp
    assert moe.matmul_params - dense.matmul_params == mlp


def test_a_config_without_sizes_is_named():
    with pytest.raises(ValueError, match="cannot estimate"):
        Shape.from_config({"model_type": "llama"})


def test_memory_grows_with_what_each_engine_keeps():
    s = Shape.from_config(load_model_config("smollm2"))
    for engine in estimate.ENGINES:
        assert forward_bytes(s, 4096, engine=engine) < forward_bytes(s, 32768, engine=engine)
    assert forward_bytes(s, 32768, engine="train-checkpointed") < forward_bytes(s, 32768, engine="train")
    kv = forward_bytes(s, 32768, engine="stream") - forward_bytes(s, 16384, engine="stream")
    assert kv > 16384 * s.kv_bytes_per_token("fp32")  # the cache and the mask grow with what was read
    bf16 = forward_bytes(s, 32768, engine="stream", dtype="bf16") - forward_bytes(s, 16384, engine="stream", dtype="bf16")
    assert kv - bf16 == 16384 * 30 * 3 * 64 * 2  # under bf16 autocast only the values are halved: keys stay fp32
    assert forward_bytes(s, 8192, engine="window", batch=2) > forward_bytes(s, 8192, engine="window")
    with pytest.raises(ValueError, match="engine='nope' is not allowed"):
        forward_bytes(s, 10, engine="nope")


def test_available_memory_reads_meminfo_and_the_cgroup_limit(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal: 100 kB\nMemAvailable: 8000000 kB\n")
    assert available_bytes(tmp_path) == 8000000 * 1024
    cg = tmp_path / "sys/fs/cgroup"
    cg.mkdir(parents=True)
    (cg / "memory.max").write_text(f"{4 << 30}\n")
    (cg / "memory.current").write_text(f"{1 << 30}\n")
    assert available_bytes(tmp_path) == 3 << 30  # the cgroup's room is smaller than MemAvailable
    (cg / "memory.max").write_text("max\n")
    assert available_bytes(tmp_path) == 8000000 * 1024
    assert available_bytes() > 0


def test_a_job_that_cannot_fit_is_refused_with_its_estimate_unless_forced():
    s = Shape.from_config(load_model_config("smollm2"))
    est = Estimate("eval ppl", s, "fp32", "window", ((2_000_000, 1),))
    with pytest.raises(TooLarge, match=r"eval ppl needs ~\d+\.\d GB at 2,000,000 tokens .* 8\.0 GB available: "
                                       r"refused before loading anything\. Use less; or pass --force"):
        check_fits(est, available=8e9, remedy="use less")
    check_fits(est, available=8e9, force=True)
    check_fits(Estimate("eval ppl", s, "fp32", "window", ((4096, 1),)), available=8e9)


def test_the_line_gives_memory_time_per_forward_and_in_all():
    s = Shape.from_config(load_model_config("smollm2"))
    rates = Rates(matmul=1e11, attention=2e11, source="measured now")
    est = Estimate("eval ppl", s, "bf16", "window", ((8192, 2), (32768, 4)), rates=rates)
    mm, att = estimate.forward_flops(s, 32768)
    assert est.forward_seconds() == pytest.approx(mm / 1e11 + att / 2e11)
    assert est.seconds == pytest.approx(2 * est.forward_seconds(8192) + 4 * est.forward_seconds(32768))
    line = est.line()
    assert line.startswith("eval ppl: ~") and "GB peak (bf16)" in line and "per 32k forward on this" in line
    assert line.endswith("in all (6 forwards)")
    assert "6 forwards of up to 32k tokens" in est.with_rates(None).line()
    resumed = Estimate("search", s, "bf16", "stream", ((32768, 25),), rates=rates, kept=31)
    assert resumed.line().endswith(" left (25 forwards; 31 kept from its journal)")
    assert resumed.seconds == pytest.approx(25 * est.forward_seconds(32768)) and resumed.with_rates(None).kept == 31


def test_rates_measured_on_a_busy_machine_are_measured_again_and_the_faster_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    model = load_model("teaching-ci").model
    shape = Shape.from_config(model.config.to_dict())
    monkeypatch.setattr(estimate, "machine_busy", lambda: True)
    slow = Rates(1.0, 2.0, "measured", busy=True)
    estimate._store(shape, "fp32", slow)
    again = estimate.calibrate(model, "fp32", length=128, attention_length=256)
    assert again.source == "measured now" and again.matmul > 1.0 and again.busy  # measured again, faster kept
    assert "a quiet machine is faster" in Estimate("x", shape, "fp32", "window", ((256, 1),), rates=again).line()
    monkeypatch.setattr(estimate, "machine_busy", lambda: False)
    quiet = estimate.calibrate(model, "fp32", length=128, attention_length=256)
    assert not quiet.busy and quiet.matmul >= again.matmul
    assert estimate.calibrate(model, "fp32").source.startswith("measured 20")  # quiet: read back from now on


def test_calibration_is_measured_once_and_then_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(estimate, "machine_busy", lambda: False)
    model = load_model("teaching-ci").model
    first = estimate.calibrate(model, "fp32", length=128, attention_length=256)
    assert first.source == "measured now" and first.matmul > 0 and first.attention > 0
    monkeypatch.setattr(type(model), "forward", lambda *a, **k: pytest.fail("calibrated again"))
    again = estimate.calibrate(model, "fp32")
    assert again.source.startswith("measured 20") and again.matmul == pytest.approx(first.matmul)
    assert estimate.cached_rates(Shape.from_config(model.config.to_dict()), "bf16") is None  # per dtype


@pytest.mark.parametrize("argv", [
    ["eval", "ppl", "--model", "smollm2", "--lengths", "4096", "2000000"],
    ["eval", "passkey", "--model", "smollm2", "--lengths", "900000"],
    ["eval", "needle", "--model", "smollm2", "--lengths", "900000"],
    ["eval", "entropy", "--model", "teaching-ci", "--length", "9000000"],
    ["search", "--model", "smollm2", "--target-length", "1048576"],
    ["finetune", "--model", "smollm2", "--method", "yarn", "--target", "65536", "--seq-len", "65536"],
    ["progressive", "--model", "teaching", "--stage1-length", "300000", "--stage2-length", "600000"],
])
def test_oversized_requests_are_refused_before_the_model_is_loaded(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(estimate, "available_bytes", lambda: 16e9)
    monkeypatch.setattr("workbench.models.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    run_dir = tmp_path / "run"
    extra = ["--run-dir", str(run_dir)] if argv[0] != "eval" else []
    assert cli.main(argv + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GB available: refused before loading anything" in err[0] and "--force" in err[0]
    assert not run_dir.exists()


def test_a_request_that_fits_shows_its_estimate_before_the_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    torch.manual_seed(0)
    assert cli.main(["eval", "ppl", "--model", "teaching-ci", "--lengths", "256", "--n-documents", "2",
                     "--per-document", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("eval ppl: ~") and "per 256-token forward on this" in out[0]
    assert "(2 forwards)" in out[0]  # two windows (--per-document spreads them, it does not multiply them)
    assert any("document 2/2 PPL" in line for line in out[1:])  # the console's progress lines


def test_the_readme_table_is_the_benchmarks():
    """The README's estimate table is the one the benchmark's result file gives (make bench rewrites both)."""
    import json
    import re
    from pathlib import Path

    root = Path(__file__).parents[1]
    for name, marker in (("estimates", "estimates"), ("estimates_llamacpp", "estimates-llamacpp")):
        result = json.loads((root / f"tests/benchmarks/results/{name}.json").read_text())
        found = re.search(f"<!-- {marker}:begin -->\n(.*?)<!-- {marker}:end -->", (root / "README.md").read_text(),
                          re.S)
        assert found and found.group(1) == result["table"], name


def test_llama_cpp_memory_is_the_file_the_kv_cache_and_one_batch_of_logits():
    s = Shape.from_config(load_model_config("smollm2"))
    f16 = dict(dtype="gguf-f16", engine="llama.cpp", chunk=512, weight_bytes=98e6)
    grown = forward_bytes(s, 32768, **f16) - forward_bytes(s, 16384, **f16)
    assert grown == 16384 * s.kv_bytes_per_token("gguf-f16") == 16384 * 2 * 30 * 3 * 64 * 2
    assert forward_bytes(s, 16384, **{**f16, "dtype": "gguf-f32"}) - forward_bytes(s, 16384, **f16) == grown
    assert forward_bytes(s, 1024, **{**f16, "weight_bytes": 1e9}) - forward_bytes(s, 1024, **f16) == 1e9 - 98e6
    assert forward_bytes(s, 32768, **f16) < forward_bytes(s, 32768, engine="window")  # Q4 weights, no activations


def test_rates_from_batches_recover_the_rates_they_were_timed_with():
    s = Shape.from_config(load_model_config("smollm2"))
    per_pair, batch = 4.0 * s.layers * s.heads * s.head_dim, 512
    matmul, attention = 2e10, 6e10
    seconds = [2.0 * batch * s.matmul_params / matmul + batch * (k * batch + (batch + 1) / 2) * per_pair / attention
               for k in range(4)]
    assert estimate.rates_from_batches(s, batch, seconds) == pytest.approx((matmul, attention))
    flat = [seconds[0]] * 4  # no measurable attention: all matrix products
    mm, att = estimate.rates_from_batches(s, batch, flat)
    assert att == 1e16 and mm == pytest.approx(2.0 * batch * s.matmul_params / seconds[0])
