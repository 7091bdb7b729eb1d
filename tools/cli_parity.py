"""Dump what every CLI command prints (stdout, stderr, exit status) on classroom-sized inputs, to compare a change.

    python tools/cli_parity.py /tmp/before.json      # on the old code
    python tools/cli_parity.py /tmp/after.json       # on the new code
    python tools/cli_parity.py --diff /tmp/before.json /tmp/after.json

Times and paths of temporary folders are masked, so two runs of the same code compare equal. Not installed with the
package: a maintainer's tool for refactors that must not change behaviour.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
from pathlib import Path

TMP = "{tmp}"

COMMANDS = [  # each a command line; {tmp} is a fresh temporary folder
    ["--help"],
    *[[*group, "--help"] for group in (["rope"], ["rope", "show"], ["rope", "export"], ["export"], ["export", "gguf"],
                                       ["doctor"], ["architectures"], ["eval"], ["eval", "ppl"], ["eval", "passkey"],
                                       ["eval", "needle"], ["eval", "entropy"], ["search"], ["finetune"],
                                       ["progressive"], ["launch"], ["teaching"], ["demo"])],
    ["rope", "show", "--model", "smollm2", "--method", "yarn", "--target", "16384", "--every", "8"],
    ["rope", "show", "--head-dim", "64", "--rope-theta", "10000", "--original", "2048", "--method", "ntk",
     "--factor", "4", "--json"],
    ["rope", "show", "--model", "smollm2", "--method", "longrope", "--target", "16384",
     "--factors", "workbench/assets/factors/smollm2-16k.json", "--every", "16"],
    ["rope", "export", "--model", "smollm2", "--method", "yarn", "--target", "8192"],
    ["rope", "export", "--model", "smollm2", "--method", "longrope", "--target", "16384", "--layout", "v4",
     "--factors", "workbench/assets/factors/smollm2-16k.json", "--out", "{tmp}/config.json"],
    ["rope", "export", "--model", "smollm2", "--method", "dynamic", "--target", "8192", "--layout", "v4"],
    ["doctor", "smollm2"],
    ["doctor", "{tmp}/config.json"],
    ["doctor", "--json", "smollm2"],
    ["export", "gguf", "--method", "yarn", "--target", "8192", "--out", "{tmp}/yarn.gguf"],
    ["export", "gguf", "--out", "{tmp}/x.gguf"],
    ["eval", "ppl", "--model", "teaching", "--lengths", "256", "512", "--n-documents", "2", "--run-dir", "{tmp}/ppl"],
    ["eval", "ppl", "--model", "teaching", "--method", "yarn", "--target", "1024", "--lengths", "1024",
     "--n-documents", "2", "--mode", "sliding", "--stride", "512"],
    ["eval", "ppl", "--model", "teaching", "--method", "yarn", "--lengths", "512"],
    ["eval", "ppl", "--model", "teaching", "--method", "longrope", "--target", "1024", "--lengths", "512"],
    ["eval", "passkey", "--model", "teaching", "--method", "ntk", "--target", "1024", "--lengths", "512", "1024",
     "--trials", "2", "--run-dir", "{tmp}/passkey"],
    ["eval", "needle", "--model", "teaching", "--lengths", "512", "--depths", "0", "1", "--run-dir", "{tmp}/needle"],
    ["eval", "needle", "--model", "teaching", "--lengths", "512", "--ppl", "--n-documents", "2"],
    ["eval", "needle", "--model", "teaching", "--lengths", "512", "--depths", "2"],
    ["eval", "entropy", "--model", "teaching", "--method", "yarn", "--target", "1024", "--length", "512",
     "--without-factor", "--run-dir", "{tmp}/entropy"],
    ["search", "--target-length", "1024", "--run-dir", "{tmp}/search", "--preset", "tiny", "--documents", "1",
     "--report-documents", "2"],
    ["search", "--target-length", "1024", "--run-dir", "{tmp}/search", "--preset", "tiny", "--documents", "1",
     "--resume", "--report-documents", "2"],
    ["search", "--target-length", "1024", "--run-dir", "{tmp}/nothing", "--resume"],
    ["finetune", "--method", "yarn", "--target", "1024", "--seq-len", "256", "--steps", "2", "--batch-size", "1",
     "--warmup", "0", "--checkpoint-every", "1", "--run-dir", "{tmp}/ft", "--quiet"],
    ["finetune", "--method", "yarn", "--target", "1024", "--seq-len", "256", "--steps", "2", "--batch-size", "1",
     "--run-dir", "{tmp}/ft", "--resume", "--quiet"],
    ["finetune", "--method", "longrope", "--target", "1024", "--seq-len", "256", "--run-dir", "{tmp}/ft2"],
    ["progressive", "--stage1-length", "512", "--stage2-length", "1024", "--run-dir", "{tmp}/pg", "--train", "[1]"],
    ["teaching", "--preset", "ci", "--multiples", "1", "2", "--n-documents", "2", "--out", "{tmp}/teach"],
    ["demo", "--out", "{tmp}/teach/teaching.json"],
]

MASKS = [
    (re.compile(r"\d+(\.\d+)? ?(s|ms|min)\b"), "<time>"),
    (re.compile(r"(about|~)\s*\d+ min \d+ s"), "<time>"),
    (re.compile(r"\d+(\.\d+)? tokens/s"), "<rate>"),
    (re.compile(r"\d+(\.\d+)? ?[GMK]i?B\b"), "<bytes>"),
    (re.compile(r"\[ *<time>\]"), "[<time>]"),
    (re.compile(r"[~<]<time>"), "<time>"),
]


def _mask(text: str, tmp: str) -> str:
    text = text.replace(tmp, TMP)
    for pattern, repl in MASKS:
        text = pattern.sub(repl, text)
    return text


def run_all() -> list[dict]:
    from workbench.cli import main

    out = []
    with tempfile.TemporaryDirectory(prefix="cli-parity-") as tmp:
        for argv in COMMANDS:
            line = [a.replace(TMP, tmp) for a in argv]
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    rc = main(line)
                except SystemExit as e:  # argparse: --help and usage errors
                    rc = e.code
            out.append({"argv": argv, "rc": rc, "stdout": _mask(stdout.getvalue(), tmp),
                        "stderr": _mask(stderr.getvalue(), tmp)})
            print(f"{rc!s:>4}  {' '.join(argv)}", file=sys.__stderr__, flush=True)
    return out


def diff(before: Path, after: Path) -> int:
    import difflib

    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    changed = 0
    for x, y in zip(a, b, strict=True):
        for key in ("rc", "stdout", "stderr"):
            if key != "rc":  # masked again: a dump made with fewer masks compares too
                x[key], y[key] = _mask(x[key], TMP), _mask(y[key], TMP)
            if x[key] != y[key]:
                changed += 1
                print(f"--- {' '.join(x['argv'])} [{key}]")
                print("\n".join(difflib.unified_diff(str(x[key]).splitlines(), str(y[key]).splitlines(), lineterm="",
                                                     n=1)))
    print(f"{changed} differences in {len(a)} commands")
    return 1 if changed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--diff", action="store_true")
    ns = parser.parse_args()
    if ns.diff:
        sys.exit(diff(*ns.paths))
    ns.paths[0].write_text(json.dumps(run_all(), indent=1))
