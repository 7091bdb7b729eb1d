"""Static figures the library writes into run folders (PNG, matplotlib), without the notebook front end.

matplotlib is imported inside the functions and used through its object API (``Figure`` + the Agg canvas),
so importing this module costs nothing and never selects a backend for the caller's process. The
interactive (plotly) versions of these figures live in ``widgets/``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def training_curve_points(history: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """(steps, values) of the training loss per step and of the held-out loss (ln PPL) where it was measured."""
    held = [h for h in history if "heldout_ppl" in h]
    return {"train loss": ([h["step"] for h in history], [h["loss"] for h in history]),
            "held-out loss at L0": ([h["step"] for h in held], [math.log(h["heldout_ppl"]) for h in held])}


def save_training_curve(history: list[dict[str, Any]], path: str | Path,
                        title: str = "Teaching model training") -> Path:
    """Draw :func:`training_curve_points` as a PNG at ``path``; returns the path.

    Raises:
        ImportError: matplotlib is missing (it comes with the ``notebook`` extra).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = {"train loss": dict(color="#1f77b4", linewidth=1.2),
              "held-out loss at L0": dict(color="#d62728", linewidth=2.5, marker="o")}
    for name, (x, y) in training_curve_points(history).items():
        if x:
            ax.plot(x, y, label=name, **styles[name])
    ax.set(title=title, xlabel="step", ylabel="loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", frameon=False)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
