"""``make demo`` / ``make demo-full``: run the demo notebooks headless with papermill and collect what they made.

The executed notebooks, their figures and a one-page ``summary.md`` go to the output folder (``runs/demo``).

- ``make demo`` (five minutes on two cores): SmolLM2-135M (trained to 8k) read at 12k tokens with no
  rescaling, YaRN and the LongRoPE factors searched in this repository — the unscaled model breaks beyond
  L0, the other two hold — and the teaching model at 8x its context with every method, in seconds.
- ``make demo-full``: every method at 8k and 16k on SmolLM2 with attention entropy (the README's full
  table), then the same teaching-model part.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .launch import PAPERMILL_CHATTER
from .rope import methods_with
from .runs import git

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

# The shortest length at which SmolLM2's unscaled loss has clearly left its 8k level (its loss beyond 8192
# is ~1.6x the loss before it at 12k on the demo's play; measured, see README): 3 forwards of 12k tokens
# fit in five minutes on the slower (AVX2-only, fp32) CPU kind this project runs on.
DEMO_LENGTH = 12288
EVERY_METHOD = methods_with("evaluate")  # the methods that declare the role (rope/<method>.py), simplest first


@dataclass(frozen=True)
class DemoStep:
    """One notebook execution: ``run`` names the executed notebook and its figure folder."""

    run: str
    notebook: str
    params: dict[str, Any] = field(default_factory=dict)
    headline: str = ""


TEACHING = DemoStep("02_teaching_model", "02_interpolation_methods", {
    "model": "teaching", "lengths": [256, 2048], "methods": EVERY_METHOD,
    "longrope_factors": "teaching-8x", "corpus": "shakespeare", "n_documents": 8, "dtype": "fp32",
    "entropy_methods": [], "measure": True}, "the teaching model (L0 = 256) read at 8x with every method")

DEMO: list[DemoStep] = [
    DemoStep("01_rope_frequencies", "01_rope_frequencies", {"model": "smollm2", "target_length": DEMO_LENGTH},
             "what RoPE rotates, and which pairs leave their trained range at 12k (SmolLM2's config only)"),
    DemoStep("02_interpolation_methods", "02_interpolation_methods", {
        "model": "smollm2", "lengths": [DEMO_LENGTH], "methods": ["default", "yarn", "longrope"],
        "longrope_factors": "smollm2-16k", "corpus": "shakespeare", "n_documents": 1, "dtype": "auto",
        "entropy_methods": [], "measure": True}, f"SmolLM2-135M at {DEMO_LENGTH} tokens: three forwards (the slow part)"),
    TEACHING,
]
FULL: list[DemoStep] = [
    DemoStep("01_rope_frequencies", "01_rope_frequencies", {"model": "smollm2", "target_length": 16384},
             "what RoPE rotates (SmolLM2's config only)"),
    DemoStep("02_interpolation_methods", "02_interpolation_methods", {
        "model": "smollm2", "lengths": [8192, 16384], "methods": EVERY_METHOD,
        "corpus": "shakespeare", "n_documents": 1, "dtype": "fp32", "entropy_methods": ["default", "yarn"],
        "entropy_rows": 8, "measure": True}, "SmolLM2-135M, every method at 8k and 16k with attention entropy (six long forwards)"),
    TEACHING,
]
QUICK: list[DemoStep] = [
    DemoStep("01_rope_frequencies", "01_rope_frequencies", {"model": "tiny-random", "target_length": 512}),
    DemoStep("02_interpolation_methods", "02_interpolation_methods",
             {"model": "tiny-random", "lengths": [128, 256], "entropy_rows": 8, "measure": True}),
]


# The classroom presets: per notebook, the parameters under which Run All finishes in under a minute on 2 CPU
# cores (measured by tests/benchmarks/test_bench_classroom.py; the README's "For teachers" lists them).
_TINY_SEARCH = {"population": 4, "parents": 2, "mutants": 1, "crossovers": 1, "generations": 1, "n_documents": 1}
CLASSROOM: dict[str, dict[str, Any]] = {
    "01_rope_frequencies": {},
    "02_interpolation_methods": {},
    "03_attention_entropy": {"model": "teaching", "length_multiple": 4, "queries_per_bucket": 16},
    "04_evolutionary_search": {"model": "teaching-ci", "multiple": 2, "budget": "tiny", "n_documents": 2,
                               "report_documents": 3},
    "05_progressive_extension": {
        "model": "teaching-ci", "stage1_multiple": 2, "stage2_multiple": 2, "eval_documents": 2,
        "search1": _TINY_SEARCH, "search2": _TINY_SEARCH, "recovery": _TINY_SEARCH,
        "train": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "warmup": 1}},
    "06_short_context_recovery": {"model": "teaching-ci", "population": 4, "generations": 1, "n_documents": 2,
                                  "eval_documents": 2},
    "07_evaluation": {"model": "teaching", "methods": ["default", "yarn", "longrope"], "multiples": [1, 4],
                      "n_documents": 2, "passkey_trials": 1, "needle_depths": [0.0, 0.5, 1.0]},
    "08_deploy": {"length": 1024, "compare_default": False},
}


def papermill_arguments(params: dict[str, Any]) -> list[str]:
    """papermill's command-line arguments for ``params``: ``-p name value`` for strings and numbers, ``-y`` with
    YAML for lists, dicts and booleans (``-p`` would pass them as strings)."""
    args: list[str] = []
    for name, value in params.items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            args += ["-p", name, str(value)]
        else:
            args += ["-y", f"{name}: {json.dumps(value)}"]
    return args


def papermill_command(name: str, params: dict[str, Any], output: str = "out.ipynb") -> str:
    """The shell command that runs ``notebooks/<name>.ipynb`` with ``params`` (arguments quoted for a shell)."""
    import shlex

    return " ".join(["papermill", f"notebooks/{name}.ipynb", output, *map(shlex.quote, papermill_arguments(params))])


def execute(name: str, params: dict[str, Any], out: Path, log: bool = True, run: str | None = None) -> Path:
    """Execute ``notebooks/<name>.ipynb`` headless into ``out/<run>.ipynb``; figures go to ``out/<run>/``."""
    import papermill as pm

    run = run or name
    source = NOTEBOOKS / f"{name}.ipynb"
    target = out / f"{run}.ipynb"
    parameters = {**params, "live": False, "output_dir": str((out / run).resolve())}
    pm.execute_notebook(str(source), str(target), parameters=parameters, kernel_name="python3", log_output=log,
                        progress_bar=False, cwd=str(NOTEBOOKS.parent), store_widget_state=False)
    return target


def _quiet(record: logging.LogRecord) -> bool:
    """Keep the notebooks' own progress lines; drop papermill's per-cell chatter."""
    msg = record.getMessage().strip()
    return bool(msg) and not msg.startswith(PAPERMILL_CHATTER)


def run_demo(out: Path, quick: bool = False, full: bool = False) -> int:
    """Run the demo notebooks; print progress; write ``out/summary.md``. Returns a process exit code."""
    steps = QUICK if quick else FULL if full else DEMO
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    handler.addFilter(_quiet)
    pm_log = logging.getLogger("papermill")
    pm_log.addHandler(handler)
    pm_log.setLevel(logging.INFO)
    t0 = time.time()
    timings = {}
    provenance = provenance_now() if full else None  # commit and machine as the measurement starts
    try:
        for k, step in enumerate(steps, 1):
            print(f"[{time.time() - t0:5.0f}s] step {k}/{len(steps)}: {step.run} — {step.headline or step.notebook}",
                  flush=True)
            t = time.time()
            execute(step.notebook, step.params, out, run=step.run)
            timings[step.run] = time.time() - t
            print(f"[{time.time() - t0:5.0f}s] {step.run} done in {timings[step.run]:.0f} s -> {out / step.run}",
                  flush=True)
    finally:
        pm_log.removeHandler(handler)
    summary = summary_page(out, steps, timings, time.time() - t0, "quick" if quick else "full" if full else "")
    (out / "summary.md").write_text(summary)
    print(summary)
    print(f"summary: {out / 'summary.md'}")
    if provenance is not None:  # the SmolLM2 table and curves notebook 02 shows without measuring
        provenance["seconds"] = round(timings.get("02_interpolation_methods", 0))
        print(f"shipped results: {write_shipped_results(out / '02_interpolation_methods', provenance)}")
    return 0


def _machine() -> str:
    import torch

    from .evaluate import resolve_dtype
    from .runs import cpu_name

    return (f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
            f"dtype auto = {resolve_dtype('auto')} on this CPU")


def summary_page(out: Path, steps: list[DemoStep], timings: dict[str, float], total: float, kind: str) -> str:
    """The page a newcomer opens first: for each perplexity run, its table and figure; then where the rest is."""
    from .evaluate import MethodComparison

    lines = [f"# LongRoPE Workbench demo{f' ({kind})' if kind else ''}", "",
             f"Measured by this run: {time.strftime('%Y-%m-%d %H:%M')}, {total / 60:.1f} min on {_machine()}.", ""]
    for step in steps:
        folder = out / step.run
        comparison = MethodComparison.read(folder) if step.notebook == "02_interpolation_methods" else None
        if comparison is None:
            continue
        lines += [f"## {comparison.model}: L0 = {comparison.L0}, read at {max(comparison.lengths)} tokens", "",
                  f"Held-out {comparison.corpus} ({', '.join(comparison.documents)}); {comparison.dtype}; "
                  f"{timings.get(step.run, 0):.0f} s.", "", comparison.markdown(), ""]
        if (folder / "perplexity.png").exists():
            lines += [f"![loss by position]({step.run}/perplexity.png)", ""]
        factors = json.loads((folder / "results.json").read_text()).get("longrope_factors")
        if factors:
            lines += [f"*longrope (searched)*: {factors}", ""]
    lines += recorded_search_section()
    lines += ["## Everything this run wrote", ""]
    for step in steps:
        figs = sorted(p.name for p in (out / step.run).glob("*.png"))
        lines.append(f"- [`{step.run}.ipynb`]({step.run}.ipynb) ({timings.get(step.run, 0):.0f} s): "
                     + ", ".join(f"[{f}]({step.run}/{f})" for f in figs))
    return "\n".join(lines) + "\n"


def recorded_search_section(name: str = "smollm2-32k") -> list[str]:
    """The real-model search shipped with the package, as far as it has run (recorded, not measured by the demo):
    its best against its seeds on the train window, and its held-out report once that has been written."""
    from .search import HeldoutReport, SearchError
    from .search.standing import read_standing, shipped_runs

    if name not in shipped_runs():
        return []
    try:
        standing = read_standing(name)
    except SearchError:
        return []
    c = standing.config
    lines = [f"## Recorded, not measured by this run: the {standing.model} search to {c['target_length']:,} tokens",
             "", standing.summary() + ".", "", standing.markdown(), ""]
    report = HeldoutReport.read(standing.folder / "heldout")
    if report is not None:
        lines += [report.summary(), "", report.markdown(), "", report.window_markdown(), ""]
    else:
        lines += ["Its held-out report (`workbench eval heldout`) has not finished; notebook 04 replays the search "
                  f'(`replay="{name}"`).', ""]
    return lines


# ---- the SmolLM2 results shipped with the package ---------------------------------------------------------
# ``make demo-full`` measures SmolLM2 at 8k and 16k with every method; the package keeps that table and its
# curves (loss by position, attention entropy by position) with where, when and how they were measured, so a
# notebook shows them in a second instead of 13 minutes of forwards.
RESULTS = Path(__file__).resolve().parent / "assets" / "results"
FULL_COMMAND = "make demo-full"


@dataclass(frozen=True)
class ShippedResults:
    """A measured perplexity table and its curves, with provenance (commit, machine, date, command)."""

    name: str
    model: str
    corpus: str
    documents: list[str]
    dtype: str
    original_max_position_embeddings: int
    lengths: list[int]
    ppl: list[Any]  # PerplexityResult per (method, length)
    entropy: list[Any]  # EntropyResult per setting, averaged over layers and heads
    provenance: dict[str, Any]

    def caption(self) -> str:
        """One line: what was measured, on which machine, when, from which commit, by which command."""
        p = self.provenance
        return (f"{self.model}, held-out {self.corpus} ({', '.join(self.documents)}), {self.dtype}: measured on "
                f"{p['machine']}, {p['date']}, commit {p['commit'][:7]}, by `{p['command']}`")

    def comparison(self) -> Any:
        """The measurement as a :class:`~workbench.evaluate.MethodComparison` (its table and figures)."""
        from .evaluate import MethodComparison
        from .rope import spec_from_dict

        specs = {r.label: spec_from_dict(r.spec) if r.spec else None for r in self.ppl}
        return MethodComparison(self.model, self.corpus, self.original_max_position_embeddings, self.lengths, specs,
                                self.ppl, self.entropy, self.documents, self.dtype)

    def entropy_beyond_L0(self) -> dict[str, float]:
        return self.comparison().entropy_beyond_L0()

    def table(self) -> str:
        """The evaluation table (markdown), as the notebook that measured it printed it."""
        return self.comparison().markdown()

    def longest(self) -> list[Any]:
        """The results at the longest length (the loss-by-position curves)."""
        return [r for r in self.ppl if r.length == max(self.lengths)]


def shipped_results(name: str = "smollm2", folder: Path = RESULTS) -> ShippedResults:
    """The results file ``workbench/assets/results/<name>.json`` (written by ``make demo-full``)."""
    from .entropy import EntropyResult
    from .evaluate import PerplexityResult

    path = folder / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.json"))) or "none"
        raise FileNotFoundError(f"no shipped results {name!r} ({path}); shipped: {known}")
    d = json.loads(path.read_text())
    return ShippedResults(d["name"], d["model"], d["corpus"], d["documents"], d["dtype"],
                          d["original_max_position_embeddings"], d["lengths"],
                          [PerplexityResult(**r) for r in d["ppl"]], [EntropyResult(**r) for r in d["entropy"]],
                          d["provenance"])


def _averaged(entropy: dict[str, Any]) -> dict[str, Any]:
    """An entropy result reduced to its mean over layers and heads (what the position curve shows): kB, not MB."""
    from .entropy import EntropyResult

    r = EntropyResult(**entropy)
    layers = f"layers {r.layers[0]}..{r.layers[-1]}" if r.layers else "all layers"
    return {**entropy, "layers": [], "n_heads": 1, "entropy": [[r.by_position()]],
            "max_weight": [[r.max_weight_by_position()]],
            "notes": [*r.notes, f"mean over {layers} and {r.n_heads} heads"]}


def results_record(run: Path, provenance: dict[str, Any], name: str = "smollm2") -> dict[str, Any]:
    """The results file's content from a finished notebook-02 output folder (``ppl.json``, ``entropy.json``,
    ``results.json``)."""
    res = json.loads((run / "results.json").read_text())
    entropy = run / "entropy.json"
    return {"name": name, "model": res["model"], "corpus": res["corpus"], "documents": res["documents"],
            "dtype": res["dtype"], "original_max_position_embeddings": res["L0"], "lengths": res["lengths"],
            "provenance": provenance, "ppl": json.loads((run / "ppl.json").read_text()),
            "entropy": [_averaged(e) for e in json.loads(entropy.read_text())] if entropy.exists() else []}


def write_shipped_results(run: Path, provenance: dict[str, Any], name: str = "smollm2", folder: Path = RESULTS) -> Path:
    """Write ``workbench/assets/results/<name>.json`` (or ``folder/<name>.json``) from a notebook-02 output folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(results_record(run, provenance, name), indent=1) + "\n")
    return path


def provenance_now(command: str = FULL_COMMAND) -> dict[str, Any]:
    """Where and how a measurement starting now is made: commit (and uncommitted library/notebook files), machine,
    date (UTC), command."""
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "workbench", "notebooks", "widgets").splitlines()]
    return {"commit": git("rev-parse", "HEAD") or "unknown", "uncommitted_files": dirty, "machine": _machine(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": command}


def provenance_of_run(out: Path, command: str = FULL_COMMAND) -> dict[str, Any]:
    """Provenance of an earlier ``make demo-full`` output folder: the date from papermill's record of the
    notebook-02 run, the machine from the run's ``summary.md``, the commit that was HEAD when it started."""
    import re

    meta = json.loads((out / "02_interpolation_methods.ipynb").read_text())["metadata"]["papermill"]
    start = meta["start_time"]  # ISO 8601, UTC
    machine = re.search(r"^Measured by this run: [^,]+, [\d.]+ min on (.+)\.$", (out / "summary.md").read_text(), re.M)
    return {"commit": git("rev-list", "-1", f"--before={start}", "HEAD") or "unknown",
            "commit_note": "HEAD when the run started (the record does not say whether the tree had changes)",
            "machine": machine.group(1) if machine else "unknown",
            "date": f"{start[:10]} {start[11:16]} UTC", "seconds": round(meta["duration"]), "command": command,
            "converted_by": f"python -m workbench.demo --results-from {out}"}


if __name__ == "__main__":  # python -m workbench.demo --results-from runs/demo-full
    import argparse

    parser = argparse.ArgumentParser(description="write the shipped SmolLM2 results from a make demo-full folder")
    parser.add_argument("--results-from", required=True, help="a make demo-full output folder (runs/demo-full)")
    folder = Path(parser.parse_args().results_from)
    print(f"wrote {write_shipped_results(folder / '02_interpolation_methods', provenance_of_run(folder))}")
