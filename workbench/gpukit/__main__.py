"""``python -m workbench.gpukit receive | run`` on the GPU host (and ``worker``, which ``run`` starts); the bundle
is made with ``make gpu-pack`` (``tools/gpu_pack.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .bundle import PACK_DIR, REPO, KitError, receive
from .presets import PRESETS, STEPS, KitPreset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.gpukit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("receive", help="verify the bundle's files that have arrived, install its wheels")
    r.add_argument("--pack", type=Path, default=REPO / PACK_DIR)

    g = sub.add_parser("run", help="every step, time-boxed, into gpu.json; resumes at the first unfinished step")
    g.add_argument("--out", type=Path, required=True, help="where gpu.json, gpu.log, the journal and notebook 05 go")
    g.add_argument("--work", type=Path, help="state and run folders (default: --out), e.g. .gpukit/work")
    g.add_argument("--tiny", action="store_true", help="the teaching model on this CPU, tiny sizes (GPU_TINY=1)")
    g.add_argument("--budget-s", type=float, help="seconds for this call (default: the preset's)")
    g.add_argument("--steps", help=f"comma-separated subset of {','.join(STEPS)}")
    g.add_argument("--fresh", action="store_true", help="forget an earlier run in the work folder")
    g.add_argument("--pack", type=Path, help=f"bundle folder (default {PACK_DIR} for the GPU; none in tiny mode)")

    w = sub.add_parser("worker", help=argparse.SUPPRESS)
    w.add_argument("--preset", type=Path, required=True, help="the preset as JSON (written by run)")
    w.add_argument("--work", type=Path, required=True)
    w.add_argument("--pack", type=Path)

    args = parser.parse_args(argv)
    try:
        if args.command == "receive":
            state = receive(args.pack)
            return 0 if state is not None else 1
        if args.command == "run":
            from .run import run

            preset = PRESETS["tiny" if args.tiny else "gpu"]
            steps = [s.strip() for s in args.steps.split(",") if s.strip()] if args.steps else None
            return run(preset, args.out, args.work, budget_s=args.budget_s, steps=steps, fresh=args.fresh,
                       pack_dir=args.pack)
        import json

        from .steps import worker

        return worker(KitPreset.from_dict(json.loads(args.preset.read_text())), args.work, args.pack)
    except KitError as e:
        print(f"gpukit {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
