"""Is someone watching? Notebooks show interactive widgets only when a front end will draw them."""

from __future__ import annotations

import os
from pathlib import Path

# programs that execute a notebook with no one watching: a widget there only adds its state to the saved file
HEADLESS_RUNNERS = ("papermill", "nbconvert", "nbclient", "jupyter-execute", "nbmake")


def runner_command(pid: int | None = None) -> str:
    """The command line of the process that started this kernel ("" where it cannot be read)."""
    try:
        raw = Path(f"/proc/{pid or os.getppid()}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def front_end_attached() -> bool:
    """False when this kernel was started by a headless runner (papermill, ``jupyter nbconvert --execute``,
    nbclient, ``jupyter execute``): no one will move a slider, and widget state would bloat the saved notebook.
    True otherwise (JupyterLab, Notebook, VS Code, or a parent this process cannot read)."""
    command = runner_command()
    return not any(name in command for name in HEADLESS_RUNNERS)


def resolve_live(live: bool | None) -> bool:
    """A notebook's ``live`` parameter: None means "live when a front end is attached"."""
    return front_end_attached() if live is None else bool(live)


__all__ = ["HEADLESS_RUNNERS", "front_end_attached", "resolve_live", "runner_command"]
