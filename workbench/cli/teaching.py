"""``workbench teaching`` and ``workbench demo``: the small model that teaches, and the demo notebooks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .args import POSITIVE
from .jobs import run_folder


def cmd_teaching(args: argparse.Namespace) -> int:
    """Train (or load) a teaching model; report its training and how it reads beyond L0 without scaling."""
    from ..models import load_teaching
    from ..plots import training_curve_figure
    from ..static import save_png
    from ..teaching import read_beyond_L0, training_info

    lm = load_teaching(args.preset)
    info = training_info(args.preset)
    L0 = info["config"]["original_max_position_embeddings"]
    print(f"teaching model {args.preset}: {info['parameters'] / 1e6:.2f}M parameters, {info['train_tokens_seen']} "
          f"training tokens in {info['seconds']:.0f} s ({info['tokens_per_second']:.0f} tokens/s); held-out PPL at "
          f"L0 = {L0}: {info['heldout_ppl_at_L0']:.2f}")
    run = run_folder(args, dest="out", params={"preset": args.preset, "multiples": args.multiples})
    longest = L0 * max(args.multiples)
    rows = read_beyond_L0(lm.model, lm.tokenizer, L0, longest, args.n_documents)
    for source, row in rows.items():
        print(f"{source:>12}: PPL per {L0}-token window of a {longest}-token read (no scaling): "
              f"{row['ppl_per_L0_window']}")
    if run:
        run.write("teaching", {"training": {k: v for k, v in info.items() if k != "history"}, "beyond_L0": rows})
        path = save_png(training_curve_figure(info["history"], f"Teaching model ({args.preset}) training"),
                        run.path / "training_curve.png")
        print(f"wrote {run.path / 'teaching.json'} and {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(Path(args.out), quick=args.quick, full=args.full)


def add_parsers(sub: Any) -> None:
    """teaching, demo."""
    teach = sub.add_parser("teaching", help="train or load the teaching model and report how it reads beyond L0")
    teach.add_argument("--preset", default="quality", choices=["quality", "ci"])
    teach.add_argument("--multiples", type=POSITIVE, nargs="+", default=[1, 2, 4, 8, 16])
    teach.add_argument("--n-documents", type=POSITIVE, default=8)
    teach.add_argument("--out", help="run folder for teaching.json and training_curve.png")
    teach.set_defaults(path_kinds={"out": "folder"}, func=cmd_teaching)
    demo = sub.add_parser("demo", help="run the demo notebooks headless (make demo)")
    demo.add_argument("--out", default="runs/demo")
    demo.set_defaults(path_kinds={"out": "folder"})
    kind = demo.add_mutually_exclusive_group()
    kind.add_argument("--quick", action="store_true", help="tiny model and lengths (seconds, for testing)")
    kind.add_argument("--full", action="store_true",
                      help="every method at 8k and 16k with attention entropy (make demo-full; 8-20 min)")
    demo.set_defaults(func=cmd_demo)
