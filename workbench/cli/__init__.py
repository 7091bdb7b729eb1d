"""Command line: ``workbench ...`` or ``python -m workbench ...``.

    workbench rope show --model smollm2 --method yarn --target 16384
    workbench rope export --model smollm2 --method longrope --target 16384 --factors f.json --out config.json
    workbench doctor path/to/config.json
    workbench export gguf --model smollm2 --method longrope --target 16384 --factors f.json --out long.gguf
    workbench eval ppl --engine llama.cpp --model long.gguf --lengths 16384
    workbench demo --out runs/demo

One module per command group; ``args`` holds the argument types, the shared argument groups and the checks every
command makes the same way, ``jobs`` what the long commands share (pre-flight estimate, progress lines, run folder).
"""

from __future__ import annotations

import argparse
import sys

from ..hf import ConfigError
from ..rope import SpecError
from . import evaluate, llamacpp, rope, search, teaching, train
from .args import CliError, check_paths

__all__ = ["CliError", "build_parser", "main"]

GROUPS = (rope.add_parsers, llamacpp.add_parsers, rope.add_doctor_parsers, evaluate.add_parsers, search.add_parsers,
          train.add_parsers, teaching.add_parsers)  # in the order of the help's list


def build_parser() -> argparse.ArgumentParser:
    """The ``workbench`` argument parser: one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="workbench", description="LongRoPE Workbench: RoPE context extension")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in GROUPS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_paths(args)
        return args.func(args)
    except (CliError, SpecError, ConfigError, ValueError, OSError) as e:  # every *Error of ours is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: what a search or fine-tune finished is kept in its run folder (a search also keeps the "
              "candidate it was reading); run the same command with --resume to go on", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
