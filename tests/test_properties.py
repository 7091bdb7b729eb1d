"""Property-based tests: any value given to a spec constructor or a numeric CLI option ends in a result or in one
error line of the workbench's own, never in a traceback."""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench import cli
from workbench.rope import SpecError, available_methods, make_spec

# derandomized: the same examples on every run, so a landing never depends on a draw; WORKBENCH_EXPLORE=N draws N
# fresh examples per property instead (to look for new failures locally)
EXPLORE = int(os.environ.get("WORKBENCH_EXPLORE", "0"))
SETTINGS = settings(max_examples=EXPLORE or 60, deadline=None, derandomize=not EXPLORE, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")  # a nan or a division by zero on the way fails
ANY_NUMBER = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([0, 1, 2, -1, 0.5, 1e-300, 1e300]))
TEXT_NUMBER = st.one_of(ANY_NUMBER.map(str), st.sampled_from(["", "nan", "inf", "-inf", "1e999", "0x10", "3.5.1",
                                                              "½", "1_000", " 4 ", "-0"]))


class WouldRun(Exception):
    """Raised instead of loading a model: the command accepted its options and would now start the work."""


@SETTINGS
@given(method=st.sampled_from(available_methods()), head_dim=ANY_NUMBER, theta=ANY_NUMBER, original=ANY_NUMBER,
       target=st.one_of(st.none(), ANY_NUMBER), factor=st.one_of(st.none(), ANY_NUMBER),
       extra=st.dictionaries(st.sampled_from(["beta_fast", "beta_slow", "attention_factor", "low_freq_factor",
                                              "high_freq_factor", "n_hat", "long_factor", "mscale"]),
                             st.one_of(ANY_NUMBER, st.lists(ANY_NUMBER, max_size=4)), max_size=2))
def test_spec_constructors_give_a_spec_or_a_spec_error(method, head_dim, theta, original, target, factor, extra):
    try:
        spec = make_spec(method, head_dim=head_dim, rope_theta=theta, original_max_position_embeddings=original,
                         target_length=target, factor=factor, **extra)
    except SpecError as e:
        assert str(e) and "\n" not in str(e).strip()
        return
    f = spec.frequencies()  # a spec that was accepted computes finite frequencies
    assert all(math.isfinite(x) and x > 0 for x in f.inv_freq.tolist()) and math.isfinite(f.attention_factor)


def _one_error_line_or_runs(argv: list[str], capsys, monkeypatch) -> None:
    if os.environ.get("WORKBENCH_EXPLORE_LOG"):
        with open(os.environ["WORKBENCH_EXPLORE_LOG"], "a") as f:
            f.write(" ".join(argv) + "\n")
    monkeypatch.setattr("workbench.models.load_model", lambda *a, **k: (_ for _ in ()).throw(WouldRun()))
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse refuses the value: usage and one error line
        code = e.code
    except WouldRun:
        code = 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    assert code in (0, 1, 2)
    if code == 2:
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1, err


@SETTINGS
@given(option=st.sampled_from(["--target", "--factor", "--head-dim", "--rope-theta", "--original", "--n-hat",
                               "--length", "--every"]),
       value=TEXT_NUMBER, method=st.sampled_from(["yarn", "linear", "ntk", "llama3", "dynamic"]))
def test_rope_show_numeric_options(option, value, method, capsys, monkeypatch):
    argv = ["rope", "show", "--model", "teaching-ci", "--method", method, "--target", "2048", f"{option}={value}"]
    _one_error_line_or_runs(argv, capsys, monkeypatch)


@SETTINGS
@given(option=st.sampled_from(["--target-length", "--population", "--parents", "--mutants", "--crossovers",
                               "--generations", "--critical-dim", "--seed", "--max-factor", "--documents",
                               "--per-document", "--chunk-tokens", "--rungs", "--rung-keep", "--threads"]),
       value=TEXT_NUMBER)
def test_search_numeric_options(option, value, capsys, monkeypatch, tmp_path):
    argv = ["search", "--model", "teaching-ci", "--preset", "tiny", "--target-length", "1024",
            "--run-dir", str(tmp_path / "run"), f"{option}={value}"]
    _one_error_line_or_runs(argv, capsys, monkeypatch)


@SETTINGS
@given(command=st.sampled_from([["eval", "ppl", "--lengths"], ["eval", "passkey", "--lengths"],
                                ["eval", "needle", "--lengths"], ["eval", "entropy", "--length"]]),
       value=TEXT_NUMBER, other=st.sampled_from([[], ["--n-documents", "0"], ["--trials", "-1"], ["--stride", "7"],
                                                 ["--method", "yarn"], ["--method", "yarn", "--target", "1e9"]]))
def test_eval_numeric_options(command, value, other, capsys, monkeypatch):
    if command[1] != "ppl" and other[:1] in (["--n-documents"], ["--stride"]):
        other = []  # options of eval ppl only
    _one_error_line_or_runs([*command, value, "--model", "teaching-ci", *other], capsys, monkeypatch)


@SETTINGS
@given(option=st.sampled_from(["--seq-len", "--steps", "--batch-size", "--grad-accum", "--lr", "--warmup",
                               "--checkpoint-every", "--target", "--threads"]), value=TEXT_NUMBER)
def test_finetune_numeric_options(option, value, capsys, monkeypatch, tmp_path):
    argv = ["finetune", "--model", "teaching-ci", "--method", "yarn", "--target", "1024", "--seq-len", "512",
            "--steps", "2", "--run-dir", str(tmp_path / "run"), f"{option}={value}"]
    _one_error_line_or_runs(argv, capsys, monkeypatch)


def test_a_base_so_large_that_frequencies_vanish_is_refused():
    with pytest.raises(SpecError, match="rope_theta=1e[+]?300 is not allowed: a base whose slowest pair still turns"):
        make_spec("yarn", head_dim=64, rope_theta=1e300, original_max_position_embeddings=4096, factor=2.0)


def test_threads_beyond_the_machine_are_refused(capsys):
    with pytest.raises(SystemExit):  # torch would try to start a million threads
        cli.main(["search", "--target-length", "1024", "--run-dir", "x", "--threads", "1000000"])
    assert "at most" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_the_property_harness_sees_refusals(value, capsys, monkeypatch):
    """The harness itself: a value the CLI refuses gives exit 2 and one error line (so the properties can fail)."""
    with pytest.raises(SystemExit) as e:
        cli.main(["rope", "show", "--model", "teaching-ci", "--method", "yarn", f"--factor={value}"])
    assert e.value.code == 2 and len([x for x in capsys.readouterr().err.splitlines() if "error:" in x]) == 1
