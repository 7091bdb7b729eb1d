"""GGUF export: what each method becomes, what is refused and why, and that the source is never touched.

Runs without llama-cpp-python (the engine parity tests are tests/test_llamacpp.py, marker ``llamacpp``).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from workbench.cli import main
from workbench.gguf import GGUFError, export_gguf, gguf_spec, plan_gguf, read_gguf
from workbench.rope import make_spec, ramp_factors

GEOM = dict(head_dim=64, rope_theta=100000.0, original_max_position_embeddings=8192)


def _write_tiny_gguf(path, arch="llama", n_rot=64, ctx=8192, theta=100000.0, extra_keys=None, rope_freqs=None):
    """A small GGUF with the keys export_gguf reads and a few tensors (one Q4_1, one F32)."""
    import gguf

    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(ctx)
    w.add_rope_dimension_count(n_rot)
    w.add_rope_freq_base(theta)
    w.add_embedding_length(64)
    w.add_head_count(1)
    w.add_string("general.name", "tiny test model")
    for k, v in (extra_keys or {}).items():
        w.add_string(k, v) if isinstance(v, str) else w.add_float32(k, v)
    rng = np.random.default_rng(0)
    q = gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q4_1)
    w.add_tensor("blk.0.attn_q.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q4_1)
    w.add_tensor("output_norm.weight", rng.standard_normal(64).astype(np.float32))
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def tiny_gguf(tmp_path):
    return _write_tiny_gguf(tmp_path / "tiny.gguf")


def _tensors(path) -> dict[str, tuple[int, bytes]]:
    import gguf

    r = gguf.GGUFReader(path)
    return {t.name: (int(t.tensor_type), t.data.tobytes()) for t in r.tensors}


def test_longrope_export_carries_factors_attention_factor_and_spec(tiny_gguf, tmp_path):
    factors = ramp_factors(32, 9.6, 31, 1.0, 3.0)
    spec = make_spec("longrope", **GEOM, target_length=16384, long_factor=factors)
    before = _sha(tiny_gguf)
    out = export_gguf(spec, tiny_gguf, tmp_path / "out.gguf")
    assert _sha(tiny_gguf) == before  # the source is only read
    info = read_gguf(out.path)
    assert info.rope_freqs == pytest.approx(list(factors), rel=1e-7)  # float32 copies of lambda_i
    assert info.attn_factor == pytest.approx(math.sqrt(1 + math.log(2) / math.log(8192)), rel=1e-6)
    assert info.scaling_type == "none" and info.context_length == 16384 and info.original_context_length == 8192
    assert gguf_spec(out.path) == spec and info.fields["workbench.spec_hash"] == spec.spec_hash()
    # every source tensor is copied byte for byte (quantised ones included); rope_freqs is added
    src, dst = _tensors(tiny_gguf), _tensors(out.path)
    assert {k: v for k, v in dst.items() if k != "rope_freqs.weight"} == src
    assert info.fields["general.name"] == "tiny test model" and info.rope_theta == 100000.0
    assert any("at every length" in n for n in out.notes)


def test_native_methods_use_llama_cpp_metadata(tiny_gguf, tmp_path):
    yarn = make_spec("yarn", **GEOM, target_length=16384)
    p = plan_gguf(yarn, read_gguf(tiny_gguf))
    assert p.rope_freqs is None
    assert p.metadata["llama.rope.scaling.type"] == ("yarn", "string")
    assert p.metadata["llama.rope.scaling.factor"] == (2.0, "float32")
    assert p.metadata["llama.rope.scaling.original_context_length"] == (8192, "uint32")
    assert "llama.rope.scaling.attn_factor" not in p.metadata  # llama.cpp applies 0.1 ln s + 1 itself
    # a custom YaRN attention factor is divided by the one llama.cpp applies on its own
    custom = make_spec("yarn", **GEOM, target_length=16384, attention_factor=1.2)
    a = plan_gguf(custom, read_gguf(tiny_gguf)).metadata["llama.rope.scaling.attn_factor"][0]
    assert a == pytest.approx(1.2 / (0.1 * math.log(2) + 1))
    linear = plan_gguf(make_spec("linear", **GEOM, target_length=32768), read_gguf(tiny_gguf))
    assert linear.metadata["llama.rope.scaling.type"] == ("linear", "string")
    assert linear.metadata["llama.rope.scaling.factor"] == (4.0, "float32")
    ntk = make_spec("ntk", **GEOM, target_length=16384)
    assert plan_gguf(ntk, read_gguf(tiny_gguf)).metadata["llama.rope.freq_base"][0] == pytest.approx(ntk.scaled_base)
    default = plan_gguf(make_spec("default", **GEOM), read_gguf(tiny_gguf))
    assert set(default.metadata) == {"workbench.rope_spec", "workbench.spec_hash"}


def test_llama3_exports_its_per_pair_factors(tiny_gguf):
    spec = make_spec("llama3", **GEOM, target_length=32768)
    p = plan_gguf(spec, read_gguf(tiny_gguf))
    f = spec.frequencies()
    expected = (spec.original_inv_freq() / f.inv_freq).tolist()
    assert p.rope_freqs == pytest.approx(expected)
    assert p.rope_freqs[0] == pytest.approx(1.0) and p.rope_freqs[-1] == pytest.approx(4.0)
    assert "llama.rope.scaling.attn_factor" not in p.metadata


def test_longrope2_exports_like_longrope(tiny_gguf):
    from workbench.rope import critical_dimension, longrope2_factors

    cd = critical_dimension(64, 100000.0, 8192)
    factors = longrope2_factors([2.0 + 0.05 * i for i in range(32 - cd)], cd, 32)
    spec = make_spec("longrope2", **GEOM, target_length=16384, long_factor=factors)
    p = plan_gguf(spec, read_gguf(tiny_gguf))
    assert p.rope_freqs == pytest.approx(list(factors))
    assert p.metadata["llama.rope.scaling.attn_factor"][0] == pytest.approx(spec.resolved_attention_factor())


@pytest.mark.parametrize(("params", "message"), [
    ({"method": "longrope", "long_factor": [2.0] * 32, "n_hat": 4}, "n_hat=4 is not expressible in llama.cpp"),
    ({"method": "longrope", "long_factor": [2.0] * 32, "short_factor": [1.1] * 32},
     "a short/long factor switch is not expressible on a Llama GGUF"),
    ({"method": "dynamic"}, "dynamic dynamic is not expressible in a GGUF"),
    ({"method": "yarn", "dynamic": True}, "dynamic yarn is not expressible in a GGUF"),
    ({"method": "yarn", "beta_fast": 16.0}, "reads no beta keys"),
])
def test_inexpressible_specs_are_refused_with_the_reason(tiny_gguf, tmp_path, params, message):
    spec = make_spec(params.pop("method"), **GEOM, target_length=16384, **params)
    with pytest.raises(GGUFError, match=message):
        export_gguf(spec, tiny_gguf, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_bad_input_one_clear_line_each(tmp_path):
    spec = make_spec("longrope", **GEOM, target_length=16384, long_factor=[2.0] * 32)
    qwen = _write_tiny_gguf(tmp_path / "qwen.gguf", arch="qwen2")
    with pytest.raises(GGUFError, match="llama.cpp reads only for the llama architecture; this GGUF is 'qwen2'"):
        export_gguf(spec, qwen, tmp_path / "out.gguf")
    # native methods are plain metadata, which llama.cpp reads for every architecture
    export_gguf(make_spec("yarn", **GEOM, target_length=16384), qwen, tmp_path / "qwen-yarn.gguf")

    wide = _write_tiny_gguf(tmp_path / "wide.gguf", n_rot=128)
    with pytest.raises(GGUFError, match="the spec has 32 factors but wide.gguf's rope dimension count 128 needs 64"):
        export_gguf(spec, wide, tmp_path / "out.gguf")

    text = tmp_path / "model.gguf"
    text.write_text("not a model\n")
    with pytest.raises(GGUFError, match="is not a GGUF file"):
        export_gguf(spec, text, tmp_path / "out.gguf")
    with pytest.raises(GGUFError, match="does not exist"):
        export_gguf(spec, tmp_path / "missing.gguf", tmp_path / "out.gguf")

    src = _write_tiny_gguf(tmp_path / "src.gguf")
    before = _sha(src)
    with pytest.raises(GGUFError, match="is the input GGUF"):
        export_gguf(spec, src, src)
    with pytest.raises(GGUFError, match="is the input GGUF"):
        export_gguf(spec, src, tmp_path / "." / "src.gguf")
    assert _sha(src) == before

    other = _write_tiny_gguf(tmp_path / "other.gguf", theta=10000.0)
    with pytest.raises(GGUFError, match="rope_theta=100000 differs from the GGUF's freq_base 10000"):
        export_gguf(spec, other, tmp_path / "out.gguf")
    scaled = _write_tiny_gguf(tmp_path / "scaled.gguf", rope_freqs=[1.0] * 32)
    with pytest.raises(GGUFError, match="already carries a RoPE rescaling"):
        export_gguf(spec, scaled, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_write_is_atomic(tiny_gguf, tmp_path, monkeypatch):
    import gguf

    spec = make_spec("longrope", **GEOM, target_length=16384, long_factor=[2.0] * 32)
    out = tmp_path / "out.gguf"
    out.write_bytes(b"previous content")
    calls = []

    def failing(self, tensor, tensor_endianess=None):
        calls.append(1)
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", failing)
    with pytest.raises(OSError, match="disk full"):
        export_gguf(spec, tiny_gguf, out)
    assert calls and out.read_bytes() == b"previous content"  # the old file stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gguf", "tiny.gguf"]  # no temporary left behind
    monkeypatch.undo()
    export_gguf(spec, tiny_gguf, out)
    assert read_gguf(out).rope_freqs == [2.0] * 32


def test_smollm2_export_copies_every_tensor_and_leaves_the_wheel_alone(tmp_path):
    from workbench.models import smollm2_gguf_path

    src = smollm2_gguf_path()
    before = _sha(src)
    factors = json.loads((Path(__file__).parent / "benchmarks/results/search_smollm2_16k_cpu.json").read_text())[
        "best_factors"]
    spec = make_spec("longrope", **GEOM, target_length=16384, long_factor=factors)
    out = export_gguf(spec, src, tmp_path / "smollm2-longrope.gguf")
    assert _sha(src) == before
    a, b = _tensors(src), _tensors(out.path)
    assert len(b) == len(a) + 1 and all(b[k] == v for k, v in a.items())
    info = read_gguf(out.path)
    assert info.architecture == "llama" and info.rope_freqs == pytest.approx(factors)


def test_cli_export_and_errors(tiny_gguf, tmp_path, capsys):
    factors = tmp_path / "f.json"
    factors.write_text(json.dumps([1.0] * 16 + [2.0] * 16))
    out = tmp_path / "long.gguf"
    assert main(["export", "gguf", "--model", str(tiny_gguf), "--method", "longrope", "--target", "16384",
                 "--factors", str(factors), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "llama.rope.scaling.attn_factor" in text and "rope_freqs.weight" in text
    assert read_gguf(out).rope_freqs == [1.0] * 16 + [2.0] * 16

    run = tmp_path / "run"
    run.mkdir()
    spec = make_spec("longrope", **GEOM, target_length=16384, long_factor=[1.5] * 32)
    (run / "result.json").write_text(json.dumps({"spec": spec.to_dict()}))
    assert main(["export", "gguf", "--model", str(tiny_gguf), "--from-run", str(run), "--out", str(out)]) == 0
    assert gguf_spec(out) == spec
    capsys.readouterr()

    cases = [
        (["--method", "longrope", "--target", "16384", "--factors", str(factors), "--out", str(tiny_gguf)],
         "is the input GGUF"),
        (["--method", "longrope", "--target", "16384", "--factors", str(factors), "--n-hat", "4", "--out", str(out)],
         "n_hat=4 is not expressible"),
        (["--out", str(out)], "give --method (with --target) or --from-run"),
        (["--from-run", str(tmp_path), "--out", str(out)], "has no result.json"),
    ]
    for extra, message in cases:
        assert main(["export", "gguf", "--model", str(tiny_gguf), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["export", "gguf", "--model", "teaching", "--method", "yarn", "--target", "512",
                 "--out", str(out)]) == 2
    assert "needs a GGUF" in capsys.readouterr().err


def test_missing_llama_cpp_python_says_how_to_install(tiny_gguf, monkeypatch, capsys):
    import sys

    from workbench.llamacpp import EngineError, llama_cpp_module

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp -> ImportError
    with pytest.raises(EngineError, match="make setup-llamacpp"):
        llama_cpp_module()
    assert main(["eval", "ppl", "--engine", "llama.cpp", "--model", str(tiny_gguf), "--lengths", "64"]) == 2
    err = capsys.readouterr().err
    assert "llama-cpp-python is not installed" in err and err.count("\n") == 1


def test_eval_ppl_engine_input_errors(tiny_gguf, capsys, monkeypatch):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "llama_cpp", types.ModuleType("llama_cpp"))  # importable: reach later checks
    for argv, message in [
        (["--model", str(tiny_gguf), "--mode", "sliding"], "truncated windows only"),
        (["--model", "teaching"], "needs a GGUF"),
        (["--model", "missing.gguf"], "does not exist"),
    ]:
        assert main(["eval", "ppl", "--engine", "llama.cpp", "--lengths", "64", *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["eval", "ppl", "--model", str(tiny_gguf), "--lengths", "64"]) == 2
    assert "evaluate it with --engine llama.cpp" in capsys.readouterr().err


def test_doctor_gives_the_export_command_for_per_pair_factors():
    from workbench.doctor import doctor

    cfg = {"model_type": "llama", "hidden_size": 576, "num_attention_heads": 9, "head_dim": 64,
           "max_position_embeddings": 16384,
           "rope_parameters": {"rope_type": "longrope", "short_factor": [1.0] * 32, "long_factor": [2.0] * 32,
                               "original_max_position_embeddings": 8192, "rope_theta": 100000.0}}
    report = doctor(cfg)
    assert report.llama_cpp == ("workbench export gguf --model model.gguf --method longrope --target 16384 "
                                "--factors factors.json --out model-longrope.gguf")
    assert "verified by execution" in report.llama_cpp_reason
    switch = {**cfg, "rope_parameters": {**cfg["rope_parameters"], "short_factor": [1.1] * 32}}
    assert doctor(switch).llama_cpp is None and "short/long" in doctor(switch).llama_cpp_reason
    yarn = {**cfg, "rope_parameters": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 8192,
                                       "rope_theta": 100000.0, "attention_factor": 1.2}}
    flags = doctor(yarn).llama_cpp
    assert "--override-kv llama.rope.scaling.attn_factor=float:" in flags and "--yarn-attn-factor" not in flags
