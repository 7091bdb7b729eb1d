"""Pre-flight estimates against what the work then takes: peak memory (VmHWM of a process doing one forward)
and time, on SmolLM2-135M and the teaching model, 4k to 32k tokens, for the engines the jobs use.

Each case runs in its own process: the estimate is made from the config and the rates measured on this machine
(calibrated once, before the forward), then the forward runs and is timed. Results:
``results/estimates.json``, whose table the README shows (``README.md`` between the ``estimates`` markers).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workbench.estimate import GB

README = Path(__file__).parents[2] / "README.md"
CASES = [  # (model, engine, dtype, length)
    *[("smollm2", "window", "bf16", n) for n in (4096, 8192, 16384, 32768)],
    *[("smollm2", "window", "fp32", n) for n in (4096, 8192, 16384)],
    *[("smollm2", "stream", "bf16", n) for n in (4096, 8192, 16384, 32768)],
    *[("teaching", "window", "fp32", n) for n in (4096, 8192, 16384, 32768)],
]
PROBE = textwrap.dedent("""
    import json, sys, time, torch
    from workbench.data import samples
    from workbench.estimate import Estimate, Shape, calibrate
    from workbench.evaluate.engine import NLLStream, token_nll
    from workbench.models import load_model
    name, engine, dtype, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    lm = load_model(name)
    doc = samples(lm.tokenizer, "shakespeare", "heldout", n, 1, progress=False)[0]
    est = Estimate("probe", Shape.from_config(lm.model.config.to_dict()), dtype, engine, ((n, 1),))
    est = est.with_rates(calibrate(lm.model, dtype))
    t = time.time()
    if engine == "window":
        token_nll(lm.model, doc.tokens[None], dtype=dtype)
    else:
        NLLStream(lm.model, doc.tokens, dtype=dtype).advance(n)
    seconds = time.time() - t
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) * 1024
    print(json.dumps({"seconds": seconds, "peak_bytes": hwm, "estimated_seconds": est.seconds,
                      "estimated_peak_bytes": est.peak_bytes, "rates": est.rates.__dict__}))
""")


def _probe(model: str, engine: str, dtype: str, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, model, engine, dtype, str(n)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    """The README's table: estimate vs measured, memory and time, one row per case."""
    lines = ["| model | engine | dtype | tokens | peak memory: estimated / measured | time: estimated / measured |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        mem = r["estimated_peak_bytes"] / r["peak_bytes"]
        tim = r["estimated_seconds"] / r["seconds"]
        lines.append(f"| {r['model']} | {r['engine']} | {r['dtype']} | {r['tokens']:,} | "
                     f"{r['estimated_peak_bytes'] / GB:.2f} / {r['peak_bytes'] / GB:.2f} GB ({mem:.2f}x) | "
                     f"{r['estimated_seconds']:.0f} / {r['seconds']:.0f} s ({tim:.2f}x) |")
    return "\n".join(lines) + "\n"


def estimated_peak(row: dict) -> float:
    """The current code's memory estimate for a measured row (a pure function of the config and the length)."""
    from workbench.estimate import Shape, forward_bytes
    from workbench.models import load_model_config

    shape = Shape.from_config(load_model_config(row["model"]))
    return forward_bytes(shape, row["tokens"], dtype=row["dtype"], engine=row["engine"])


def test_estimates_against_measurements(record):
    rows = []
    for model, engine, dtype, n in CASES:
        r = _probe(model, engine, dtype, n)
        rows.append({"model": model, "engine": engine, "dtype": dtype, "tokens": n, **r})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    within = [abs(r["estimated_peak_bytes"] / r["peak_bytes"] - 1) <= 0.25 and
              abs(r["estimated_seconds"] / r["seconds"] - 1) <= 0.25 for r in rows]
    record("estimates", {"goal": "estimate within 25 % of the measurement, memory and time", "rows": rows,
                         "within_goal": sum(within), "of": len(rows), "table": table(rows)})


LLAMA_CPP_LENGTHS = (1024, 4096, 8192, 16384)
LLAMA_CPP_PROBE = textwrap.dedent("""
    import json, sys, time
    from workbench import llamacpp
    from workbench.data import samples
    from workbench.models import smollm2_gguf_path
    n = int(sys.argv[1])
    path = smollm2_gguf_path()
    doc = samples(llamacpp.gguf_tokenizer(path), "shakespeare", "heldout", n, 1, progress=False)
    est = llamacpp.estimate(path, [(n, 1)]).with_rates(llamacpp.calibrate(path))
    t = time.time()
    llamacpp.perplexity(path, doc, length=n, progress=False)
    seconds = time.time() - t
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) * 1024
    print(json.dumps({"seconds": seconds, "peak_bytes": hwm, "estimated_seconds": est.seconds,
                      "estimated_peak_bytes": est.peak_bytes, "rates": est.rates.__dict__}))
""")


def test_llama_cpp_estimates_against_measurements(record):
    """The llama.cpp engine on SmolLM2's Q4_1 GGUF: its estimate (file, KV cache, one batch of logits; rates from
    two timed batches) against a real window, each length in its own process."""
    from workbench import llamacpp

    if not llamacpp.available():
        pytest.skip(llamacpp.INSTALL_HINT)
    rows = []
    for n in LLAMA_CPP_LENGTHS:
        out = subprocess.run([sys.executable, "-c", LLAMA_CPP_PROBE, str(n)], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"model": "smollm2 (Q4_1 GGUF)", "engine": "llama.cpp", "dtype": "gguf-f16", "tokens": n, **r})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    within = [abs(r["estimated_peak_bytes"] / r["peak_bytes"] - 1) <= 0.25 and
              abs(r["estimated_seconds"] / r["seconds"] - 1) <= 0.25 for r in rows]
    record("estimates_llamacpp", {"goal": "estimate within 25 % of the measurement, memory and time", "rows": rows,
                                  "within_goal": sum(within), "of": len(rows), "table": table(rows)})


OVERSIZED = [  # requests far beyond a 24 GB machine, across the commands that run long jobs
    "eval ppl --model smollm2 --lengths 2000000",
    "eval ppl --model smollm2 --lengths 3000000 --dtype bf16",
    "eval ppl --model smollm2 --lengths 8192 4000000 --n-documents 2",
    "eval ppl --model teaching --lengths 16000000",
    "eval ppl --model smollm2 --lengths 1200000 --mode sliding --stride 4096",
    "eval passkey --model smollm2 --lengths 3000000",
    "eval passkey --model teaching --lengths 16000000 --trials 1",
    "eval needle --model smollm2 --lengths 2500000",
    "eval needle --model smollm2 --lengths 2500000 --ppl",
    "eval entropy --model teaching-ci --length 9000000",
    "eval entropy --model smollm2 --length 2000000",
    "search --model smollm2 --target-length 1048576 --run-dir {tmp}/s1",
    "search --model smollm2 --target-length 2097152 --dtype bf16 --run-dir {tmp}/s2",
    "search --model smollm2 --target-length 524288 --chunk-tokens 524288 --run-dir {tmp}/s3",
    "search --model teaching --target-length 8388608 --run-dir {tmp}/s4",
    "finetune --model smollm2 --method yarn --target 65536 --seq-len 65536 --run-dir {tmp}/f1",
    "finetune --model smollm2 --method yarn --target 32768 --seq-len 32768 --batch-size 4 --run-dir {tmp}/f2",
    "finetune --model smollm2 --method yarn --target 262144 --seq-len 262144 --batch-size 1 "
    "--gradient-checkpointing --run-dir {tmp}/f3",
    "progressive --model teaching --stage1-length 300000 --stage2-length 600000 --run-dir {tmp}/p1",
    "progressive --model smollm2 --stage1-length 65536 --stage2-length 131072 --run-dir {tmp}/p2",
]


def test_oversized_requests_are_refused_before_allocating(record, tmp_path):
    """Each request runs as a real process: refused with its estimate, in seconds, no traceback, nothing written."""
    import time

    rows = []
    for command in OVERSIZED:
        argv = command.format(tmp=tmp_path).split()
        t = time.time()
        out = subprocess.run([sys.executable, "-m", "workbench", *argv], capture_output=True, text=True)
        seconds = time.time() - t
        err = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("[transformers]")]
        rows.append({"command": command, "exit": out.returncode, "seconds": round(seconds, 2),
                     "message": err[-1] if err else ""})
        print(f"{seconds:5.1f} s  exit {out.returncode}  {command}", flush=True)
    written = sorted(p.name for p in tmp_path.iterdir())
    ok = [r for r in rows if r["exit"] == 2 and "refused before loading anything" in r["message"]
          and r["seconds"] < 15 and "Traceback" not in r["message"]]
    record("oversized", {"goal": "each refused before allocating, with its estimate, in under 15 s",
                         "refused_in_time": len(ok), "of": len(rows), "folders_written": written, "rows": rows})
    assert len(ok) == len(rows) and not written


def refresh() -> None:
    """Recompute the memory estimates of the recorded rows with the current code (they depend on the config and
    the length only; the measurements and the time estimates stay as measured), and write the JSON and the
    README's table: ``python tests/benchmarks/test_bench_estimate.py``."""
    import re

    path = Path(__file__).parent / "results" / "estimates.json"
    data = json.loads(path.read_text())
    for row in data["rows"]:
        row["estimated_peak_bytes"] = estimated_peak(row)
    within = [abs(r["estimated_peak_bytes"] / r["peak_bytes"] - 1) <= 0.25 and
              abs(r["estimated_seconds"] / r["seconds"] - 1) <= 0.25 for r in data["rows"]]
    data.update(within_goal=sum(within), table=table(data["rows"]))
    path.write_text(json.dumps(data, indent=1))
    text = README.read_text()
    README.write_text(re.sub(r"(<!-- estimates:begin -->\n)(.*?)(<!-- estimates:end -->)",
                             lambda m: m.group(1) + data["table"] + m.group(3), text, flags=re.S))


if __name__ == "__main__":
    refresh()
