"""Run folders: every long job writes its parameters, library versions, spec hash, events and results.

    run/
      params.json     what was asked, with versions and the RoPE spec hash
      events.jsonl    one JSON event per line, appended as they happen (a killed run keeps them)
      <name>.json     results
"""

from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .events import JsonlSink


def versions() -> dict[str, str]:
    import torch
    import transformers

    from . import __version__

    return {"workbench": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for records of where a number was measured."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class RunFolderError(ValueError):
    """A run folder holds another kind of run, or another process is using it."""


def folder_kind(path: str | Path) -> str | None:
    """The kind of run a folder holds, read from its ``params.json`` (None: the folder holds no run yet)."""
    params = Path(path) / "params.json"
    if not params.exists():
        return None
    try:
        data = json.loads(params.read_text())
    except (OSError, json.JSONDecodeError):
        return "unreadable"
    if not isinstance(data, dict):
        return "unreadable"
    if isinstance(data.get("kind"), str):
        return data["kind"]
    # folders written before params.json named its kind
    if isinstance(data.get("identity"), dict):
        return "finetune" if "seq_len" in json.dumps(data["identity"]) else "search"
    if "params" in data:
        return "evaluation"
    return "progressive" if "config" in data and "model" in data else "unreadable"


def made_by(path: str | Path) -> str:
    """What a run folder's params.json says about when its run started and with which workbench version."""
    try:
        data = json.loads((Path(path) / "params.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "its params.json is unreadable"
    started = data.get("started") if isinstance(data, dict) else None
    version = (data.get("versions") or {}).get("workbench") if isinstance(data, dict) else None
    return ("started " + started if started else "start time not recorded") + (f", workbench {version}" if version else "")


def claim(path: str | Path, kind: str) -> None:
    """Refuse a folder that already holds a run of another kind, before anything is written into it.

    Raises:
        RunFolderError: naming the kind the folder holds and the kind this command would write.
    """
    held = folder_kind(path)
    if held is not None and held != kind:
        raise RunFolderError(f"{path} holds a run of kind {held!r} ({made_by(path)}); this command writes a run of "
                             f"kind {kind!r} and would break it: choose another folder")


@contextmanager
def folder_lock(path: str | Path, what: str):
    """Hold ``path``'s lock for the duration of a run; a second process is refused, told who holds it.

    Raises:
        RunFolderError: another process holds the lock.
    """
    import fcntl

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise RunFolderError(f"{folder} is in use by {holder}; wait for it to finish (or stop it) before "
                                 f"running {what} there") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({what}), since {time.strftime('%H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class RunFolder:
    """A folder for one job; ``sink`` appends events to ``events.jsonl``."""

    def __init__(self, path: str | Path, params: dict[str, Any] | None = None, spec: Any = None,
                 kind: str = "evaluation") -> None:
        self.path = Path(path)
        if params is not None:
            claim(self.path, kind)
        self.path.mkdir(parents=True, exist_ok=True)
        self.sink = JsonlSink(self.path / "events.jsonl")
        if params is not None:
            meta = {"kind": kind, "params": params, "versions": versions(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
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
