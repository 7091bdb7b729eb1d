"""Run folders: every long job writes its parameters, library versions, spec hash, events and results.

    run/
      params.json     one format for every kind: {"kind", "format", "identity", "spec", "spec_hash",
                      "versions", "world_size", "started"}; ``identity`` is what must match to resume
      events.jsonl    one JSON event per line, appended as they happen (a killed run keeps them)
      .lock           held by the process running in the folder (a second one is told who holds it)
      <name>.json     results (a search adds its journals, a fine-tune its checkpoints)

A folder written before this format (no "format" key) is recognised (its kind is read) but not resumed:
the refusal says to continue it with the version that started it or to start a new folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from .events import JsonlSink, null_sink


def versions() -> dict[str, str]:
    import torch
    import transformers

    from . import __version__

    return {"workbench": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def git(*args: str) -> str:
    """``git args`` in the workbench's checkout (stdout; "" outside a git checkout or without git)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


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
    # folders written before params.json named its kind (format 1)
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


FORMAT = 2  # params.json's format: kind, format, identity, spec and spec_hash, versions, world_size, started
NOUNS = {"search": "a search", "finetune": "a fine-tuning run", "progressive": "a progressive run",
         "evaluation": "an evaluation", "heldout": "a held-out report"}


def model_fingerprint(model: Any) -> str:
    """A short hash of a model's config and a slice of its weights: resuming on another model is refused."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    emb = model.get_input_embeddings().weight
    h.update(emb.detach().flatten()[:4096].float().cpu().numpy().tobytes())  # .cpu(): a model on a GPU too
    return h.hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Where two identities differ, one line per leaf: "key.sub: <old> in the folder, <new> now"."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {_short(a)} in the folder, {_short(b)} now")
    return out


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _params(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((path / "params.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _metadata(kind: str, identity: dict[str, Any], spec: Any) -> dict[str, Any]:
    from . import distributed

    return {"kind": kind, "format": FORMAT, "identity": identity,
            "spec": spec.to_dict() if spec is not None else None,
            "spec_hash": spec.spec_hash() if spec is not None else None, "versions": versions(),
            "world_size": distributed.world_size(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _refusal(folder: Path, kind: str, identity: dict[str, Any], resume: bool) -> str | None:
    """Why ``folder`` cannot start (or resume) a run of ``kind`` with ``identity``; None when it can."""
    params = folder / "params.json"
    held = folder_kind(folder)
    if held not in (None, kind):
        return (f"{folder} holds a run of kind {held!r} ({made_by(folder)}), not {NOUNS.get(kind, kind)}: choose "
                "another run folder")
    if not params.exists():
        if not resume:
            return None
        if folder.exists() and any(folder.glob("journal-*.jsonl")):
            return f"cannot resume {folder}: params.json is missing"
        return (f"cannot resume {folder}: " + ("it does not exist" if not folder.exists() else
                f"it holds no {kind} (no params.json)") + "; check the path, or drop resume (--resume) to start a "
                f"new {kind} there")
    if not resume:
        return (f"{folder} already holds {NOUNS.get(kind, kind)}; pass resume=True (--resume) to continue it, or "
                "choose another run folder")
    data = _params(folder) or {}
    if data.get("format") != FORMAT:
        return (f"cannot resume {folder}: it was written by an older workbench ({made_by(folder)}; params.json "
                f"format {data.get('format', 1)}, this version reads format {FORMAT}); its results stay readable, "
                "but continue it with the workbench version that started it, or start a new run folder")
    diffs = differences(data.get("identity") or {}, identity)
    if diffs:
        return f"cannot resume {folder}: it was made with different settings: " + "; ".join(diffs)
    return None


class RunFolder:
    """A folder for one job: ``params.json`` (one format for every kind), ``events.jsonl`` and results.

    ``RunFolder(path, params, spec)`` starts an evaluation (never resumed); :meth:`open` starts or resumes a
    search, a fine-tune or a progressive run, refusing a folder of another kind or other settings.
    """

    def __init__(self, path: str | Path, params: dict[str, Any] | None = None, spec: Any = None,
                 kind: str = "evaluation") -> None:
        self.path = Path(path)
        self.kind = kind
        self.resumed = False
        if params is not None:
            claim(self.path, kind)
        self.path.mkdir(parents=True, exist_ok=True)
        self.sink = JsonlSink(self.path / "events.jsonl")
        if params is not None:
            (self.path / "params.json").write_text(json.dumps(_metadata(kind, params, spec), indent=1, default=str))

    @classmethod
    def open(cls, path: str | Path, kind: str, identity: dict[str, Any], resume: bool, *,
             spec: Any = None) -> RunFolder:
        """Start a run of ``kind`` in ``path`` or resume the one there (``resume``); every process calls it.

        Process 0 checks the folder and writes ``params.json`` for a new run; the other processes get its
        verdict. Nothing is written when the folder is refused; ``events.jsonl`` is opened at the first event.

        Raises:
            RunFolderError: the folder holds another kind of run, a run made with other settings (each
                difference named), a run from an older workbench, or no run to resume.
        """
        from . import distributed

        folder = Path(path)
        error = None
        if distributed.is_main():
            error = _refusal(folder, kind, identity, resume)
            if error is None and not resume:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "params.json").write_text(json.dumps(_metadata(kind, identity, spec), indent=1,
                                                               default=str))
        error = distributed.broadcast(error)  # every process waits for process 0's check
        if error:
            raise RunFolderError(error)
        run = cls.__new__(cls)
        run.path, run.kind, run.resumed = folder, kind, resume
        run.sink = JsonlSink(folder / "events.jsonl") if distributed.is_main() else null_sink
        return run

    @contextmanager
    def hold(self, what: str):
        """Every process calls it: process 0 holds this folder's lock while the run works in it (see
        :func:`folder_lock`). When another process holds it, every process raises, told who holds it, so none
        is left waiting for the others in a collective.

        Raises:
            RunFolderError: another process is working in the folder.
        """
        from . import distributed

        with ExitStack() as held:
            error = None
            if distributed.is_main():
                try:
                    held.enter_context(folder_lock(self.path, what))
                except RunFolderError as e:
                    error = str(e)
            error = distributed.broadcast(error)
            if error:
                raise RunFolderError(error)
            yield

    @property
    def params(self) -> dict[str, Any]:
        return _params(self.path) or {}

    def write(self, name: str, data: Any) -> Path:
        """Write ``name``.json (results objects with ``to_dict``, lists of them, or plain data)."""
        if isinstance(data, list):
            data = [d.to_dict() if hasattr(d, "to_dict") else d for d in data]
        elif hasattr(data, "to_dict"):
            data = data.to_dict()
        path = self.path / f"{name}.json"
        path.write_text(json.dumps(data, indent=1, default=float))
        return path
