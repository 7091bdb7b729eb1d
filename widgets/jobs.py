"""Long work in a background thread, so a widget stays responsive and its Stop button works.

The work function receives a sink; the job's sink forwards events to the widget and raises
:class:`Cancelled` once Stop was pressed. Library code emits events often (every decoder layer of a
forward), so a stop takes effect within seconds even in the middle of a long evaluation.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from workbench.events import Event


class Cancelled(Exception):
    """Raised inside the work function when the user pressed Stop."""


class BackgroundJob:
    """Run ``work(sink)`` in a daemon thread.

    Args:
        work: the function to run; it must pass ``sink`` to the library calls it makes.
        on_event: called (in the worker thread) for every event.
        on_done: called with the work's return value; on_error with the exception text;
            on_cancel when stopped.
    """

    def __init__(self, work: Callable[[Callable[[Event], None]], Any], *, on_event: Callable[[Event], None] | None = None,
                 on_done: Callable[[Any], None] | None = None, on_error: Callable[[str], None] | None = None,
                 on_cancel: Callable[[], None] | None = None) -> None:
        self.work, self.on_event = work, on_event
        self.on_done, self.on_error, self.on_cancel = on_done, on_error, on_cancel
        self.stop_requested = threading.Event()
        self.thread: threading.Thread | None = None
        self.result: Any = None
        self.error: str | None = None
        self.cancelled = False

    def sink(self, event: Event) -> None:
        if self.stop_requested.is_set():
            raise Cancelled()
        if self.on_event is not None:
            self.on_event(event)

    def _run(self) -> None:
        try:
            self.result = self.work(self.sink)
        except Cancelled:
            self.cancelled = True
            if self.on_cancel:
                self.on_cancel()
            return
        except Exception as e:  # noqa: BLE001 - reported to the widget, which shows it
            self.error = f"{type(e).__name__}: {e}"
            if self.on_error:
                self.on_error(self.error)
            else:
                traceback.print_exc()
            return
        if self.on_done:
            self.on_done(self.result)

    def start(self) -> BackgroundJob:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_requested.set()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)
