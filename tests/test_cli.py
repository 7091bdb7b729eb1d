from __future__ import annotations

import json

import pytest

from workbench.cli import main


def test_rope_show_table_and_json(capsys):
    args = ["rope", "show", "--head-dim", "64", "--rope-theta", "100000", "--original", "8192", "--target", "16384"]
    assert main(args + ["--method", "yarn"]) == 0
    out = capsys.readouterr().out
    assert "critical dim" in out and "YaRN ramp pairs 10..20" in out
    assert main(args + ["--method", "linear", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["pairs"]) == 32 and data["pairs"][0]["effective_factor"] == 2.0


def test_rope_export_writes_a_loadable_config(tmp_path, capsys):
    factors = tmp_path / "f.json"
    factors.write_text(json.dumps({"long_factor": [1.0] * 12 + [1.0 + 0.1 * i for i in range(20)]}))
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"model_type": "llama", "hidden_size": 576, "num_attention_heads": 9, "head_dim": 64,
                                "max_position_embeddings": 8192, "rope_theta": 100000.0}))
    out = tmp_path / "config.json"
    assert main(["rope", "export", "--config", str(base), "--method", "longrope", "--target", "16384",
                 "--factors", str(factors), "--out", str(out)]) == 0
    cfg = json.loads(out.read_text())
    assert cfg["rope_parameters"]["rope_type"] == "longrope" and cfg["max_position_embeddings"] == 16384
    assert "rope_theta" not in cfg  # v5 keeps it inside rope_parameters
    from workbench.hf import hf_config_from_dict

    assert hf_config_from_dict(cfg).rope_parameters["long_factor"][-1] == pytest.approx(2.9)


def test_the_shipped_factor_sets_are_read_as_factor_files(capsys):
    from workbench.factors import load_factor_set

    shipped = load_factor_set("teaching-8x")
    path = "workbench/assets/factors/teaching-8x.json"
    spec = shipped.spec
    assert main(["rope", "show", "--method", "longrope", "--head-dim", str(spec.head_dim), "--rope-theta",
                 str(spec.rope_theta), "--original", str(spec.original_max_position_embeddings), "--factor",
                 str(spec.factor), "--factors", path, "--json"]) == 0
    pairs = json.loads(capsys.readouterr().out)["pairs"]
    assert [p["effective_factor"] for p in pairs] == pytest.approx(list(spec.long_factor))


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    assert main(["doctor", str(bad)]) == 2
    assert "is not a JSON config file" in capsys.readouterr().err
    assert main(["rope", "show", "--method", "yarn", "--head-dim", "64", "--rope-theta", "1e4", "--original", "4096",
                 "--target", "1024"]) == 2
    assert "target_length=1024 is not allowed" in capsys.readouterr().err
    assert main(["rope", "show", "--method", "yarn", "--target", "1024"]) == 2
    assert "give --model/--config" in capsys.readouterr().err


def test_doctor_exit_code_reflects_errors(tmp_path, capsys):
    cfg = {"model_type": "phi3", "hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 8192,
           "rope_parameters": {"rope_type": "longrope", "short_factor": [1.0] * 32, "long_factor": [2.0] * 30,
                               "original_max_position_embeddings": 4096, "rope_theta": 10000.0}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    assert main(["doctor", str(path)]) == 1
    assert "long_factor has 30 values" in capsys.readouterr().out


def test_demo_quick_writes_notebooks_figures_and_summary(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "01_rope_frequencies.ipynb").exists() and (tmp_path / "02_interpolation_methods.ipynb").exists()
    summary = (tmp_path / "summary.md").read_text()
    assert "| longrope |" in summary and "perplexity.png" in summary
    assert "attention entropy beyond L0" in summary and "entropy.png" in summary  # the evaluation table


def test_export_save_model_loads_in_stock_transformers(tmp_path, capsys):
    """The shipped folder: stock transformers loads it and matches the patched model."""
    import torch
    from transformers import AutoModelForCausalLM

    from workbench.hf import spec_for_model
    from workbench.models import load_model
    from workbench.patch import patch

    folder = tmp_path / "tiny-yarn"
    assert main(["rope", "export", "--model", "tiny-random", "--method", "yarn", "--target", "512",
                 "--save-model", str(folder)]) == 0
    stock = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert stock.config.rope_parameters["rope_type"] == "yarn"
    lm = load_model("tiny-random")
    ids = torch.randint(0, 1000, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), patch(lm.model, spec_for_model(lm.model, "yarn", target_length=512)):
        expected = lm.model(ids).logits
    with torch.no_grad():
        assert torch.allclose(stock(ids).logits, expected, atol=1e-5)


# ---- eval, teaching, progressive, launch ------------------------------------------------------------------------
def test_eval_subcommands_print_their_rows_and_write_a_run_folder(tmp_path, capsys):
    run = tmp_path / "ppl"
    assert main(["eval", "ppl", "--model", "teaching-ci", "--lengths", "64", "128", "--n-documents", "2",
                 "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "no scaling @ 64: PPL" in out and "no scaling @ 128: PPL" in out
    assert [r["length"] for r in json.loads((run / "ppl.json").read_text())] == [64, 128]
    assert json.loads((run / "params.json").read_text())  # the run folder says what ran
    spec = ["--model", "teaching-ci", "--method", "yarn", "--target", "1024"]
    assert main(["eval", "passkey", *spec, "--lengths", "96", "--trials", "1"]) == 0
    assert "yarn passkey: " in (out := capsys.readouterr().out) and "% @ 96 (1 trials per length)" in out
    assert main(["eval", "needle", *spec, "--lengths", "160", "--depths", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "yarn needle accuracy " in out and "over 1 depths x 1 lengths" in out and "| depth | 160 |" in out
    assert main(["eval", "needle", *spec, "--lengths", "160", "--ppl", "--n-documents", "1", "--needles", "1"]) == 0
    assert "yarn needle-driven PPL @ 160" in capsys.readouterr().out
    assert main(["eval", "entropy", *spec, "--length", "64", "--layers", "0"]) == 0
    assert "yarn @ 64: mean entropy" in capsys.readouterr().out


def test_teaching_reports_how_it_reads_beyond_L0_and_draws_its_training(tmp_path, capsys):
    assert main(["teaching", "--preset", "ci", "--multiples", "1", "2", "--n-documents", "1",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "teaching model ci:" in out and "PPL per 256-token window of a 512-token read" in out
    report = json.loads((tmp_path / "teaching.json").read_text())
    assert set(report["beyond_L0"]) == {"shakespeare", "bible", "stdlib"}
    assert all(len(row["ppl_per_L0_window"]) == 2 for row in report["beyond_L0"].values())
    assert (tmp_path / "training_curve.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("extra, words", [
    (["--train", "[1]"], "--train '[1]' is not allowed: a JSON object"),
    (["--search1", "{generations: 2}"], "--search1 '{generations: 2}' is not JSON"),
    (["--train", '{"stepz": 3}'], "stepz"),
])
def test_progressive_refuses_bad_budgets_before_any_work(extra, words, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["progressive", "--model", "teaching-ci", "--stage1-length", "512", "--stage2-length", "1024",
            "--run-dir", str(run), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not run.exists()


def test_launch_runs_a_notebook_with_parameters_and_refuses_undeclared_ones(tmp_path, capsys):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('n: int = 1\noutput_dir: str = "out"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("from pathlib import Path\nPath(output_dir).mkdir(parents=True, "
                                          "exist_ok=True)\n(Path(output_dir) / 'n.txt').write_text(str(n * 2))")]
    path = tmp_path / "double.ipynb"
    nbformat.write(nb, path)
    assert main(["launch", str(path), "-p", "stepz", "3"]) == 2
    assert "parameter(s) ['stepz'] are not declared by double.ipynb" in capsys.readouterr().err
    assert main(["launch", str(path), "-p", "n", "21", "--out", str(tmp_path / "ran.ipynb")]) == 0
    assert (tmp_path / "ran" / "n.txt").read_text() == "42"  # output_dir defaults to the executed notebook's stem
    assert "launching double.ipynb" in capsys.readouterr().out and (tmp_path / "ran.ipynb").exists()


def test_a_sigterm_inside_a_search_is_an_interrupt_and_the_handler_comes_back():
    import os
    import signal
    import time

    from workbench.cli.search import terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    t0 = time.time()
    with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():  # as Ctrl-C: the reading candidate is saved
        os.kill(os.getpid(), signal.SIGTERM)
        while time.time() - t0 < 30:  # delivered at the next bytecode
            pass
    assert time.time() - t0 < 30 and signal.getsignal(signal.SIGTERM) is before
