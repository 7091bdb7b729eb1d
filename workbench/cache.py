"""The workbench's cache folder and its entries: written atomically, built once, checked against checksums.

The cache folder is ``$WORKBENCH_CACHE`` or ``~/.cache/longrope-workbench``. Every entry is written to a
temporary folder and renamed into place, so an interrupted build leaves nothing half-written behind; a
lock file beside an entry makes concurrent builders take turns; a record of sizes and SHA-256 sums lets a
reader notice damaged files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_ENV = "WORKBENCH_CACHE"


def cache_dir(create: bool = True) -> Path:
    """The workbench's cache folder (created on demand, unless ``create`` is False)."""
    path = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "longrope-workbench")
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(final: Path) -> list[Path]:
    """Remove temporary folders of ``final`` left by processes that were killed; returns what was removed."""
    removed = []
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


@contextmanager
def atomic_dir(final: Path, marker: str | None = None):
    """Yield a temporary folder beside ``final``; rename it to ``final`` only if the block succeeds.

    A process killed inside the block leaves only a ``.<name>.tmp-<pid>-*`` folder, which the next
    attempt removes; ``final`` itself is never half-written. If ``final`` exists when the block ends, it
    is kept (another process finished first) unless ``marker`` names a file it lacks: then it is a broken
    entry, and the new folder replaces it.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            if marker is not None and not (final / marker).exists():
                broken = Path(tempfile.mkdtemp(prefix=f".{final.name}.broken-{os.getpid()}-", dir=final.parent))
                os.rename(final, broken / "entry")
                os.rename(tmp, final)
                shutil.rmtree(broken, ignore_errors=True)
            else:  # another process finished first; keep its copy
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def entry_lock(final: Path, what: str, log: Callable[[str], None] = print):
    """Hold an exclusive lock on cache entry ``final`` (a ``.<name>.lock`` file beside it) while it is built.

    A second process asking for the same entry says who holds the lock and waits for it, instead of
    building the same thing in parallel.
    """
    import fcntl

    final.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(final.parent / f".{final.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            log(f"waiting for {holder} to finish {what} ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:100]}), since {time.strftime('%H:%M:%S')}"
                  .encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def cached_entry(final: Path, marker: str, build: Callable[[Path], None], what: str,
                 log: Callable[[str], None] = print) -> Path:
    """The cache entry ``final``, complete: built by ``build(tmp)`` once if it is missing or broken.

    ``marker`` is the file written last, whose presence means the entry is complete. Builders take turns
    (:func:`entry_lock`); temporary folders of killed builders are removed; a broken entry is replaced.
    """
    if (final / marker).exists():
        clean_stale(final)
        return final
    with entry_lock(final, what, log):
        if not (final / marker).exists():
            with atomic_dir(final, marker) as tmp:
                build(tmp)
    return final


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_record(folder: Path, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of files, recorded when a cache entry is built."""
    return {name: {"size": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)} for name in names}


_VERIFIED: set[tuple[str, float]] = set()


def damaged_files(folder: Path, record: dict[str, dict[str, Any]]) -> list[str]:
    """Files of ``folder`` that differ from ``record`` (size always; the hash once per process and version)."""
    bad = []
    for name, want in record.items():
        path = folder / name
        if not path.exists() or path.stat().st_size != want["size"]:
            bad.append(name)
            continue
        key = (str(path), path.stat().st_mtime)
        if key not in _VERIFIED:
            if file_sha256(path) != want["sha256"]:
                bad.append(name)
                continue
            _VERIFIED.add(key)
    return bad
