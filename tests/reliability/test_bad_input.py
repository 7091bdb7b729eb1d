"""Bad input, tried as an adversarial user would: every case gets one line naming the parameter, the
value and what is allowed, a non-zero exit at the CLI, no traceback, and nothing written before the check.

The CLI rows run in-process through ``workbench.cli.main`` (fast); a few run as real processes to prove that no
traceback reaches the terminal. Library rows use ``pytest.raises`` with the message.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.cli import main

TRACEBACK = "Traceback (most recent call last)"


def _config(path: Path, **changes) -> str:
    """A small Llama config.json with ``changes`` (None removes a key)."""
    cfg = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
           "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 2048,
           "rope_theta": 10000.0}
    cfg.update(changes)
    path.write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))
    return str(path)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``workbench argv`` in this process; argparse's exit counts as an exit code."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


SHOW = ["rope", "show", "--model", "teaching-ci"]
SEARCH = ["search", "--model", "teaching-ci", "--preset", "tiny", "--target-length", "512"]
EVAL = ["--model", "teaching-ci"]
PROGRESSIVE = ["progressive", "--model", "teaching-ci", "--stage1-length", "512", "--stage2-length", "1024"]

# (id, argv (CONFIG/RUN replaced per test), expected exit code, words expected in the message,
#  where the message goes)
CASES = [
    ("original-0", ["rope", "show", "--method", "linear", "--head-dim", "64", "--rope-theta", "10000", "--original",
                    "0", "--target", "4096"], 2, ["--original", "0", "integer >= 2"], "err"),
    ("longrope-without-factors", SHOW + ["--method", "longrope", "--target", "1024"], 2,
     ["longrope", "long_factor", "--factors"], "err"),
    ("longrope2-without-factors", SHOW + ["--method", "longrope2", "--target", "1024"], 2,
     ["longrope2", "long_factor", "--factors"], "err"),
    ("eval-ppl-longrope-without-factors", ["eval", "ppl", *EVAL, "--method", "longrope", "--target", "1024",
                                           "--lengths", "64"], 2, ["--method longrope", "--factors"], "err"),
    ("target-10e12", SHOW + ["--method", "linear", "--target", str(10**12)], 2,
     ["target length", "1000000000000", "at most 16777216"], "err"),
    ("every-0", SHOW + ["--method", "linear", "--target", "1024", "--every", "0"], 2,
     ["--every", "0 is not allowed", "integer >= 1"], "err"),
    ("every-negative", SHOW + ["--method", "linear", "--target", "1024", "--every", "-1"], 2,
     ["--every", "-1 is not allowed"], "err"),
    ("length-0", SHOW + ["--method", "linear", "--target", "1024", "--length", "0"], 2,
     ["--length", "0 is not allowed"], "err"),
    ("length-negative", SHOW + ["--method", "linear", "--target", "1024", "--length", "-100"], 2,
     ["--length", "-100 is not allowed"], "err"),
    ("config-rope-theta-abc", ["rope", "show", "--method", "linear", "--target", "4096", "--config",
                               "CONFIG:rope_theta=abc"], 2, ["rope_theta='abc'", "finite number"], "err"),
    ("config-hidden-size-str", ["rope", "show", "--method", "linear", "--target", "4096", "--config",
                                "CONFIG:hidden_size=192"], 2, ["hidden_size='192'", "positive integer"], "err"),
    ("doctor-legacy-type-magic", ["doctor", "CONFIG:magic"], 1, ["rope_type='magic'", "longrope"], "out"),
    ("doctor-factor-string", ["doctor", "CONFIG:factor_str"], 1, ["factor='4'", "finite number"], "out"),
    ("doctor-long-factor-int", ["doctor", "CONFIG:long_factor_int"], 1, ["long_factor=5", "list of numbers"], "out"),
    ("doctor-rope-scaling-string", ["doctor", "CONFIG:scaling_str"], 1, ["rope_scaling='linear'", "a dict"], "out"),
    ("search-max-factor-abc", SEARCH + ["--run-dir", "RUN", "--max-factor", "abc"], 2,
     ["--max-factor", "'abc' is not allowed", "'1+s'"], "err"),
    ("search-max-factor-nan", SEARCH + ["--run-dir", "RUN", "--max-factor", "nan"], 2,
     ["--max-factor", "nan is not allowed", "finite"], "err"),
    ("search-max-factor-inf", SEARCH + ["--run-dir", "RUN", "--max-factor", "inf"], 2,
     ["--max-factor", "inf is not allowed", "finite"], "err"),
    ("search-threads-negative", SEARCH + ["--run-dir", "RUN", "--threads", "-2"], 2,
     ["--threads", "-2 is not allowed"], "err"),
    ("search-critical-dim-100", SEARCH + ["--run-dir", "RUN", "--mode", "longrope2", "--critical-dim", "100"], 2,
     ["critical_dim=100", "32 frequency pairs", "[1, 30]"], "err"),
    ("search-resume-missing-folder", SEARCH + ["--run-dir", "RUN", "--resume"], 2,
     ["--resume", "does not exist"], "err"),
    ("entropy-length-0", ["eval", "entropy", *EVAL, "--length", "0"], 2, ["--length", "0 is not allowed"], "err"),
    ("passkey-trials-0", ["eval", "passkey", *EVAL, "--lengths", "64", "--trials", "0"], 2,
     ["--trials", "0 is not allowed"], "err"),
    ("needle-ppl-needles-0", ["eval", "needle", *EVAL, "--lengths", "64", "--ppl", "--needles", "0"], 2,
     ["--needles", "0 is not allowed"], "err"),
    ("needle-depth-out-of-range", ["eval", "needle", *EVAL, "--lengths", "64", "--depths", "1.5"], 2,
     ["--depths", "1.5", "[0, 1]"], "err"),
    ("eval-config-with-model", ["eval", "ppl", *EVAL, "--lengths", "64", "--config", "CONFIG:"], 2,
     ["--config", "not allowed", "--model 'teaching-ci'"], "err"),
    ("ppl-sliding-stride-above-window", ["eval", "ppl", *EVAL, "--lengths", "64", "--mode", "sliding", "--stride",
                                         "100", "--run-dir", "RUN"], 2, ["--stride 100", "<= 64"], "err"),
    ("passkey-length-too-short", ["eval", "passkey", *EVAL, "--lengths", "5", "--run-dir", "RUN"], 2,
     ["length=5", "too short"], "err"),
    ("needle-length-too-short", ["eval", "needle", *EVAL, "--lengths", "5", "--run-dir", "RUN"], 2,
     ["length=5", "too short"], "err"),
    ("entropy-layer-out-of-range", ["eval", "entropy", *EVAL, "--length", "64", "--layers", "99", "--run-dir", "RUN"],
     2, ["layers=[99]", "0..1"], "err"),
    ("entropy-bucket-size-0", ["eval", "entropy", *EVAL, "--length", "64", "--bucket-size", "0"], 2,
     ["--bucket-size", "0 is not allowed"], "err"),
    ("ppl-n-documents-1000", ["eval", "ppl", *EVAL, "--lengths", "64", "--n-documents", "1000"], 2,
     ["--n-documents 1000", "only", "at most"], "err"),
    ("progressive-search1-unknown-key", PROGRESSIVE + ["--run-dir", "RUN", "--search1", '{"foo": 1}'], 2,
     ["search1", "unknown key", "'foo'", "generations"], "err"),
    ("progressive-train-bad-json", PROGRESSIVE + ["--run-dir", "RUN", "--train", "{bad json"], 2,
     ["--train", "is not JSON"], "err"),
    ("progressive-search2-not-object", PROGRESSIVE + ["--run-dir", "RUN", "--search2", "[1, 2]"], 2,
     ["--search2", "JSON object"], "err"),
    ("progressive-train-negative-lr", PROGRESSIVE + ["--run-dir", "RUN", "--train", '{"lr": -1}'], 2,
     ["train", "lr=-1", "finite number > 0"], "err"),
    ("progressive-stage2-below-stage1", ["progressive", "--model", "teaching-ci", "--stage1-length", "1024",
                                         "--stage2-length", "512", "--run-dir", "RUN"], 2,
     ["stage2_length=512", "stage1_length=1024"], "err"),
    ("progressive-stage1-not-above-L0", ["progressive", "--model", "teaching-ci", "--stage1-length", "256",
                                         "--stage2-length", "512", "--run-dir", "RUN"], 2,
     ["stage1_length=256", "L0=256"], "err"),
    ("finetune-resume-missing-folder", ["finetune", "--method", "linear", "--target", "512", "--seq-len", "64",
                                        "--steps", "2", "--run-dir", "RUN", "--resume"], 2,
     ["--resume", "does not exist"], "err"),
    ("finetune-lr-0", ["finetune", "--method", "linear", "--target", "512", "--seq-len", "64", "--lr", "0",
                       "--run-dir", "RUN"], 2, ["--lr", "0 is not allowed", "> 0"], "err"),
]

_CONFIGS = {
    "magic": {"rope_scaling": {"type": "magic", "factor": 4.0}},
    "factor_str": {"rope_scaling": {"rope_type": "linear", "factor": "4"}},
    "long_factor_int": {"rope_scaling": {"rope_type": "longrope", "factor": 4.0, "long_factor": 5,
                                         "short_factor": [1.0] * 8, "original_max_position_embeddings": 512}},
    "scaling_str": {"rope_scaling": "linear"},
}


def _resolve(argv: list[str], tmp_path: Path) -> list[str]:
    out = []
    for a in argv:
        if a == "RUN":
            a = str(tmp_path / "run")
        elif a.startswith("CONFIG:"):
            spec = a[len("CONFIG:"):]
            if spec in _CONFIGS:
                a = _config(tmp_path / "config.json", **_CONFIGS[spec])
            elif "=" in spec:
                key, value = spec.split("=")  # the value stays a string: the wrong type is the point
                a = _config(tmp_path / "config.json", **{key: value})
            else:
                a = _config(tmp_path / "config.json")
        out.append(a)
    return out


@pytest.mark.parametrize("argv,code,words,stream", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_bad_input_is_one_clear_line_and_nothing_written(argv, code, words, stream, tmp_path, capsys):
    code_seen, out, err = run_cli(_resolve(argv, tmp_path), capsys)
    message = out if stream == "out" else err
    assert code_seen == code != 0, (out, err)
    for w in words:
        assert w in message, (w, message)
    assert TRACEBACK not in out + err
    assert not (tmp_path / "run").exists()  # checked before any file was written


def test_doctor_rope_scaling_unknown_keys_is_a_finding(tmp_path, capsys):
    cfg = _config(tmp_path / "c.json", rope_scaling={"rope_type": "linear", "factor": 4.0, "bogus_key": 1})
    code, out, _ = run_cli(["doctor", cfg], capsys)
    assert code == 0  # a warning, not an error
    assert "unknown key(s) ['bogus_key']" in out and "transformers ignores them" in out


def test_doctor_says_when_stock_transformers_refuses_and_shows_the_repaired_config(tmp_path, capsys):
    # a legacy Phi-3 "su" layout: transformers 5 has no rope_type "su" (no validator, no init function)
    cfg = _config(tmp_path / "c.json", rope_scaling={
        "type": "su", "long_factor": [1.0 + 0.1 * i for i in range(8)], "short_factor": [1.0] * 8,
        "original_max_position_embeddings": 512})
    code, out, _ = run_cli(["doctor", cfg, "--json"], capsys)
    report = json.loads(out)
    stock = report["stock_transformers"]
    assert stock["warnings"] and "'su'" in stock["warnings"][0]
    assert stock["repaired"]["rope_parameters"]["rope_type"] == "longrope"
    from workbench.doctor import stock_transformers_check

    original = {k: v for k, v in json.loads(Path(cfg).read_text()).items() if k != "rope_scaling"}
    accepted, why, warned = stock_transformers_check({**original, **stock["repaired"]})
    assert accepted and not [w for w in warned if "rope" in w.lower()]

    refused = _config(tmp_path / "r.json", rope_scaling="linear")
    code, out, _ = run_cli(["doctor", refused], capsys)
    assert code == 1 and "stock transformers" in out and "REFUSES" in out
    good = _config(tmp_path / "g.json")
    code, out, _ = run_cli(["doctor", good], capsys)
    assert code == 0 and "accepts this config" in out


def test_no_traceback_reaches_the_terminal(tmp_path):
    """Real processes: argparse refusals, library refusals and refusals after the model is loaded."""
    cases = [
        (["rope", "show", "--method", "linear", "--head-dim", "64", "--rope-theta", "10000", "--original", "0",
          "--target", "4096"], "--original"),
        (SEARCH + ["--run-dir", str(tmp_path / "run"), "--mode", "longrope2", "--critical-dim", "100"],
         "critical_dim=100"),
    ]
    for argv, word in cases:
        p = subprocess.run([sys.executable, "-m", "workbench", *argv], capture_output=True, text=True, timeout=120)
        assert p.returncode != 0, p
        assert word in p.stdout + p.stderr
        assert TRACEBACK not in p.stdout + p.stderr, p.stderr
    assert not (tmp_path / "run").exists()


# ---- validation before side effects ---------------------------------------------------------------------------
def test_search_with_wrong_factor_count_writes_nothing_and_the_corrected_command_then_works(tmp_path, capsys):
    run = tmp_path / "search"
    factors = tmp_path / "f.json"
    factors.write_text(json.dumps([1.0] * 5))  # the teaching model has 32 pairs
    base = ["search", "--model", "teaching-ci", "--preset", "tiny", "--target-length", "512", "--run-dir", str(run),
            "--documents", "1", "--generations", "0", "--no-n-hat", "--no-report", "--corpus", "shakespeare"]
    code, _, err = run_cli([*base, "--factors", str(factors)], capsys)
    assert code == 2 and "5 factors" in err and "32" in err
    assert not run.exists()
    factors.write_text(json.dumps([1.0 + i / 16 for i in range(32)]))
    code, out, err = run_cli([*base, "--factors", str(factors)], capsys)
    assert code == 0, err
    assert (run / "params.json").is_file() and "best PPL" in out
    # resuming the finished search there works too; resuming a mistyped path does not start a fresh one
    assert run_cli([*base, "--factors", str(factors), "--resume"], capsys)[0] == 0
    typo = [a if a != str(run) else str(tmp_path / "serach") for a in base]
    code, _, err = run_cli([*typo, "--resume"], capsys)
    assert code == 2 and "does not exist" in err and not (tmp_path / "serach").exists()


def test_search_resume_of_a_folder_without_a_search_is_refused_by_the_library(teaching_ci, tmp_path):
    from workbench.search import SearchConfig, SearchError, run_search

    lm = teaching_ci
    cfg = SearchConfig(target_length=512, population=3, parents=2, mutants=1, crossovers=0, generations=0,
                       n_documents=1, per_document=1, n_hat_stage=False)
    with pytest.raises(SearchError, match="does not exist"):
        run_search(lm.model, lm.tokenizer, cfg, tmp_path / "missing", resume=True, report=False)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SearchError, match="no params.json"):
        run_search(lm.model, lm.tokenizer, cfg, tmp_path / "empty", resume=True, report=False)
    assert list((tmp_path / "empty").iterdir()) == []


def test_eval_refused_after_loading_writes_no_run_folder_and_the_corrected_command_then_works(tmp_path, capsys):
    run = tmp_path / "ppl"
    base = ["eval", "ppl", "--model", "teaching-ci", "--lengths", "32", "--run-dir", str(run)]
    code, _, err = run_cli([*base, "--n-documents", "1000"], capsys)
    assert code == 2 and "--n-documents 1000" in err
    assert not (run / "params.json").exists()
    code, out, err = run_cli([*base, "--n-documents", "1"], capsys)
    assert code == 0, err
    assert (run / "params.json").is_file() and (run / "ppl.json").is_file() and "PPL" in out


def test_progressive_refuses_bad_budgets_before_the_first_stage(tmp_path):
    from workbench.progressive import ProgressiveConfig, ProgressiveError, run_progressive

    with pytest.raises(ProgressiveError, match=r"train: lr=-1 is not allowed"):
        ProgressiveConfig(512, 1024, train={"lr": -1})
    with pytest.raises(ProgressiveError, match=r"search1: unknown key\(s\) \['foo'\]"):
        ProgressiveConfig(512, 1024, search1={"foo": 1})
    with pytest.raises(ProgressiveError, match=r"search2: population=0 is not allowed"):
        ProgressiveConfig(512, 1024, search2={"population": 0})
    with pytest.raises(ProgressiveError, match="stage2_length=512 is not allowed"):
        ProgressiveConfig(1024, 512)
    cfg = ProgressiveConfig(256, 1024)  # valid alone, but not above the teaching model's L0 = 256
    with pytest.raises(ProgressiveError, match="stage1_length=256"):
        run_progressive("teaching-ci", cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---- the Python API --------------------------------------------------------------------------------------------
def _api_cases():
    from workbench.rope import make_spec
    from workbench.search import SearchConfig
    from workbench.train import TrainConfig

    geom = dict(head_dim=64, rope_theta=10000.0)
    return [
        ("make_spec-L0-0", lambda: make_spec("linear", **geom, original_max_position_embeddings=0,
                                             target_length=4096), "original_max_position_embeddings=0"),
        ("make_spec-longrope-without-long_factor", lambda: make_spec(
            "longrope", **geom, original_max_position_embeddings=256, target_length=1024), "needs long_factor"),
        ("make_spec-target-10e12", lambda: make_spec("yarn", **geom, original_max_position_embeddings=256,
                                                     target_length=10**12), "at most 16777216"),
        ("SearchConfig-target-negative", lambda: SearchConfig(target_length=-5), "target_length=-5"),
        ("SearchConfig-target-string", lambda: SearchConfig(target_length="2048"), "target_length='2048'"),
        ("SearchConfig-corpus", lambda: SearchConfig(target_length=2048, corpus="nope"), "corpus='nope'"),
        ("SearchConfig-attention-policy-bogus", lambda: SearchConfig(target_length=2048, attention_policy="bogus"),
         "attention_policy='bogus'"),
        ("SearchConfig-attention-policy-constant", lambda: SearchConfig(target_length=2048,
                                                                        attention_policy="constant"),
         "needs a fixed attention_factor"),
        ("SearchConfig-critical-dim-0", lambda: SearchConfig(target_length=2048, mode="longrope2", critical_dim=0),
         "critical_dim=0"),
        ("SearchConfig-max-factor-nan", lambda: SearchConfig(target_length=2048, max_factor=math.nan),
         "max_factor=nan"),
        ("SearchConfig-user-seed-text", lambda: SearchConfig(target_length=2048, user_seeds=(("a", "b"),)),
         "user_seeds[0]"),
        ("TrainConfig-clip-negative", lambda: TrainConfig(seq_len=64, clip=-1), "clip=-1"),
        ("TrainConfig-betas-above-1", lambda: TrainConfig(seq_len=64, betas=(0.9, 1.5)), "betas=(0.9, 1.5)"),
        ("TrainConfig-betas-scalar", lambda: TrainConfig(seq_len=64, betas=0.9), "betas=0.9"),
        ("TrainConfig-min-lr-ratio", lambda: TrainConfig(seq_len=64, min_lr_ratio=2.0), "min_lr_ratio=2.0"),
        ("TrainConfig-weight-decay", lambda: TrainConfig(seq_len=64, weight_decay=-0.1), "weight_decay=-0.1"),
        ("TrainConfig-warmup-float", lambda: TrainConfig(seq_len=64, warmup=2.5), "warmup=2.5"),
    ]


@pytest.mark.parametrize("case", range(17))
def test_api_bad_input_raises_a_clear_error(case):
    name, call, words = _api_cases()[case]
    with pytest.raises(ValueError) as info:
        call()
    assert words in str(info.value), (name, str(info.value))
    assert "is not allowed" in str(info.value) or "needs" in str(info.value)


def test_api_case_count_matches():
    assert len(_api_cases()) == 17


def test_export_config_refuses_a_model_without_rotary_embeddings():
    from workbench.hf import ConfigError, NotExpressibleError, export_config
    from workbench.rope import make_spec

    spec = make_spec("linear", head_dim=64, rope_theta=10000.0, original_max_position_embeddings=1024,
                     target_length=4096)
    gpt2 = {"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_positions": 1024}
    with pytest.raises(ConfigError, match="model_type='gpt2' has no rotary embeddings"):
        export_config(spec, gpt2)
    llama = {"model_type": "llama", "rope_theta": 10000.0, "max_position_embeddings": 1024, "hidden_size": 512,
             "num_attention_heads": 8}  # head_dim 64, the spec's
    full, _ = export_config(spec, llama)
    assert full["rope_parameters"]["rope_type"] == "linear"
    with pytest.raises(NotExpressibleError, match="LlamaConfig gives a rotary dimension of 128 where the spec has 64"):
        export_config(spec, {**llama, "hidden_size": 1024})


def test_library_counts_and_needles_are_checked_before_any_work():
    from workbench.data import DataError, needle_samples
    from workbench.evaluate import EvalError, needle_grid, passkey_accuracy

    with pytest.raises(EvalError, match="n_trials=0 is not allowed"):
        passkey_accuracy(None, None, [64], n_trials=0)
    with pytest.raises(EvalError, match="n_trials=0 is not allowed"):
        needle_grid(None, None, [0.5], [64], n_trials=0)
    with pytest.raises(DataError, match="n_needles=0 is not allowed"):
        needle_samples(None, "shakespeare", "heldout", 64, 1, n_needles=0)


# ---- NaN perplexity --------------------------------------------------------------------------------------------
def test_nan_perplexity_is_an_error_naming_the_likely_cause(tmp_path, capsys, monkeypatch):
    import workbench.models as models

    real = models.load_model

    def damaged(name, **kwargs):
        lm = real(name, **kwargs)
        model = copy.deepcopy(lm.model)  # the loader may share its model: damage a copy only
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))  # as flipped bytes in cached weights would
        return models.LoadedModel(model, lm.tokenizer, lm.name, lm.source)

    monkeypatch.setattr(models, "load_model", damaged)
    code, out, err = run_cli(["eval", "ppl", "--model", "teaching-ci", "--lengths", "32", "--n-documents", "1",
                              "--run-dir", str(tmp_path / "run")], capsys)
    assert code == 2
    assert "nan" in err and "damaged model weights" in err
    assert "PPL nan" not in out and TRACEBACK not in err

    from workbench.evaluate import EvalError, check_finite

    class Result:
        ppl, label, length = math.inf, "x", 64

    with pytest.raises(EvalError, match="not a measurement"):
        check_finite(Result())


# ---- resuming a finished fine-tune -----------------------------------------------------------------------------
def test_resuming_a_finished_finetune_says_so_instead_of_last_loss_nan(tmp_path, capsys):
    run = tmp_path / "ft"
    argv = ["finetune", "--model", "teaching-ci", "--method", "linear", "--target", "512", "--seq-len", "32",
            "--steps", "2", "--batch-size", "1", "--warmup", "0", "--checkpoint-every", "2", "--corpora",
            "shakespeare", "--dtype", "fp32", "--quiet", "--run-dir", str(run)]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    code, out, err = run_cli([*argv, "--resume"], capsys)
    assert code == 0, err
    assert "already complete" in out and "2 of 2 steps" in out and "last loss" in out
    assert "nan" not in out


def test_the_edges_of_what_is_allowed_are_still_accepted():
    """The stricter checks refuse only what is wrong: the documented edge values still pass."""
    from workbench.search import SearchConfig
    from workbench.train import TrainConfig

    assert TrainConfig(seq_len=64, clip=0).clip == 0  # 0: no clipping
    assert TrainConfig(seq_len=64, clip=math.inf, betas=[0.0, 0.999], min_lr_ratio=1.0, warmup=0).betas == (0.0, 0.999)
    assert SearchConfig(target_length=2048, attention_policy="yarn", max_factor="1.25s").attention_policy == "yarn"
    assert SearchConfig(target_length=2048, mode="longrope2", critical_dim=1, max_factor=9).critical_dim == 1


# ---- paths of the wrong kind: the option and the remedy are named, nothing is written -------------------------
@pytest.mark.parametrize("argv, option, words", [
    (["eval", "ppl", *EVAL, "--lengths", "128", "--run-dir", "{file}"], "--run-dir", "is a file, not a folder"),
    ([*SEARCH, "--run-dir", "{file}/sub"], "--run-dir", "which is a file"),
    (["rope", "export", *EVAL, "--method", "yarn", "--target", "1024", "--out", "{file}/config.json"], "--out",
     "which is a file"),
    (["rope", "export", *EVAL, "--method", "yarn", "--target", "1024", "--out", "{folder}"], "--out", "is a folder"),
    (["architectures", "llama", "--json", "{file}/x.json"], "--json", "which is a file"),
    (["demo", "--out", "{file}"], "--out", "is a file, not a folder"),
])
def test_a_path_of_the_wrong_kind_names_the_option(argv, option, words, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    argv = [a.format(file=afile, folder=tmp_path) for a in argv]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.startswith(f"error: {option} ") and words in err and TRACEBACK not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_cache_path_that_is_a_file_names_the_variable(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    monkeypatch.setenv("WORKBENCH_CACHE", str(afile))
    code, _, err = run_cli(["eval", "ppl", *EVAL, "--lengths", "128"], capsys)
    assert code == 2 and err.startswith("error: WORKBENCH_CACHE ") and "unset it" in err


def test_a_model_folder_without_weights_points_to_the_config_only_commands(tmp_path, capsys):
    from workbench.models import load_model_config

    (tmp_path / "config.json").write_text(json.dumps(load_model_config("teaching-ci")))
    code, _, err = run_cli(["eval", "ppl", "--model", str(tmp_path), "--lengths", "128"], capsys)
    assert code == 2 and "holds a config but no weights" in err and f"workbench doctor {tmp_path}" in err
    code, out, _ = run_cli(["doctor", str(tmp_path)], capsys)  # and that command does work on it
    assert code == 0 and "head_dim" in out
