"""Run folders: every long job writes its parameters, library versions, spec hash, events and results.

    run/
      params.json     what was asked, with versions and the RoPE spec hash
      events.jsonl    one JSON event per line, appended as they happen (a killed run keeps them)
      <name>.json     results
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from .events import JsonlSink


def versions() -> dict[str, str]:
    import torch
    import transformers

    from . import __version__

    return {"workbench": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


class RunFolder:
    """A folder for one job; ``sink`` appends events to ``events.jsonl``."""

    def __init__(self, path: str | Path, params: dict[str, Any] | None = None, spec: Any = None) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.sink = JsonlSink(self.path / "events.jsonl")
        if params is not None:
            meta = {"params": params, "versions": versions(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "spec": spec.to_dict() if spec is not None else None,
                    "spec_hash": spec.spec_hash() if spec is not None else None}
            (self.path / "params.json").write_text(json.dumps(meta, indent=1, default=str))

    def write(self, name: str, data: Any) -> Path:
        """Write ``name``.json (results objects with ``to_dict``, lists of them, or plain data)."""
        if isinstance(data, list):
            data = [d.to_dict() if hasattr(d, "to_dict") else d for d in data]
        elif hasattr(data, "to_dict"):
            data = data.to_dict()
        path = self.path / f"{name}.json"
        path.write_text(json.dumps(data, indent=1, default=float))
        return path
