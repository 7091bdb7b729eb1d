"""Write the hand-drawn ramps the SmolLM2 searches are seeded with (workbench/assets/seeds/), from code.

    python tools/seeds.py

``ramp_factors(32, 9.6, 31, 1.0, top)``: factor 1 for the fast pairs up to pair 9.6, then a straight line to
``top`` at the last pair. The 4x search (8k -> 32k) takes the ramps to 5 and 6 (1.25 s and 1.5 s); the 2x search
(8k -> 16k) the ramps to 2.5 and 3 (the same multiples of s). Not installed with the package: a maintainer's tool.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.rope import ramp_factors

SEEDS = Path(__file__).resolve().parent.parent / "workbench" / "assets" / "seeds"
TOPS = (2.5, 3.0, 5.0, 6.0)


def main() -> None:
    SEEDS.mkdir(parents=True, exist_ok=True)
    for top in TOPS:
        path = SEEDS / f"smollm2-ramp-9.6-31-to-{top:g}.json"
        path.write_text(json.dumps([round(x, 4) for x in ramp_factors(32, 9.6, 31, 1.0, top)]))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
