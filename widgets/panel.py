"""What every panel shares: figures shown as data in an output area, the model picker and its cache, the
status line, background jobs (done / error / stopped), and display in a notebook.

A live figure is an ``ipywidgets.Output`` holding one display bundle (plotly JSON, drawn by JupyterLab's
plotly renderer), replaced whole on every update. It is not a plotly ``FigureWidget``: those are anywidgets
whose front end must load a ~5 MB script and initialise within anywidget's fixed 2 s, which a busy machine
misses ("[anywidget] Failed to initialize model."), leaving an empty frame for good.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go

from .display import PLOTLY_MIME, mime_bundle
from .jobs import BackgroundJob

MODELS = [("teaching model (L0 256, seconds)", "teaching"), ("teaching-ci: smaller and weaker, shipped", "teaching-ci"),
          ("SmolLM2-135M (L0 8192, minutes per document)", "smollm2")]
MODEL_HELP = "teaching, teaching-ci, smollm2 or a transformers model folder"


class FigureOutput:
    """One figure of a panel: drawn from a plotly figure, or a line that says why there is none yet.

    Args:
        message: what to show until the first figure (e.g. "press Measure").
        width / height: the output area's size in pixels, so the panel does not jump when the figure arrives.
    """

    def __init__(self, message: str, width: int = 520, height: int = 340) -> None:
        self.widget = W.Output(layout=W.Layout(width=f"{width}px", min_height=f"{height}px"))
        self.width, self.height = width, height
        self.figure: go.Figure | None = None
        self.bundle: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.message(message)

    def show(self, fig: go.Figure) -> None:
        """Replace what the output shows with ``fig`` (safe from a background thread)."""
        fig.update_layout(width=self.width, height=self.height)
        self._set(fig, mime_bundle(fig, png=False))  # a PNG costs ~0.1 s of matplotlib per update; live needs none

    def message(self, text: str) -> None:
        """Show a line of text (why there is no figure) instead of a figure."""
        self._set(None, {"text/html": f"<div style='color:#666;padding:8px'>{html.escape(text)}</div>",
                         "text/plain": text})

    def _set(self, fig: go.Figure | None, bundle: dict[str, Any]) -> None:
        with self._lock:
            self.figure, self.bundle = fig, bundle
            self.widget.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)

    @property
    def traces(self) -> list[dict[str, Any]]:
        """The traces of the figure shown now, as plain JSON (empty when a message is shown)."""
        return list(self.bundle.get(PLOTLY_MIME, {}).get("data", []))

    @property
    def title(self) -> str:
        title = self.bundle.get(PLOTLY_MIME, {}).get("layout", {}).get("title", {})
        return title.get("text", "") if isinstance(title, dict) else str(title)


def model_picker(model: str, description: str = "model", width: str = "420px") -> W.Dropdown:
    """A dropdown of the workbench's models; a folder (or any other name) given as ``model`` is added to it."""
    options = MODELS if model in {v for _, v in MODELS} else [*MODELS, (model, model)]
    return W.Dropdown(options=options, value=model, description=description, tooltip=MODEL_HELP,
                      style={"description_width": "60px"}, layout=W.Layout(width=width))


def error_html(text: str) -> str:
    return f"<span style='color:#b2182b'>⚠ {html.escape(text)}</span>"


class Panel:
    """Base of the panels: a status line, a model cache, one background job at a time, notebook display.

    A subclass builds its controls, sets ``self.buttons`` (disabled while a job runs) and ``self.stop_button``,
    and defines :attr:`widget`.
    """

    def __init__(self) -> None:
        self.status = W.HTML()
        self.job: BackgroundJob | None = None
        self.buttons: list[W.Button] = []
        self.stop_button: W.Button | None = None
        self._models: dict[str, Any] = {}

    @property
    def widget(self) -> W.Widget:
        raise NotImplementedError

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def say(self, text: str, error: bool = False) -> None:
        """Set the status line (``text`` is HTML unless ``error``, which is escaped and shown in red)."""
        self.status.value = error_html(text) if error else text

    def load(self, name: str) -> Any:
        """The loaded model ``name`` (a workbench name or a folder), loaded once per panel."""
        if name not in self._models:
            from workbench.models import load_model

            self._models[name] = load_model(name)
        return self._models[name]

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def start_job(self, work: Callable[[Callable], Any], on_done: Callable[[Any], None], wait: bool = False,
                  on_event: Callable | None = None, on_cancel: Callable[[], None] | None = None) -> BackgroundJob:
        """Run ``work(sink)`` in the background with the buttons disabled; ``on_done(result)`` then re-enables
        them. An error is shown in red in the status line; a stop says "stopped" (or calls ``on_cancel``)."""
        self._busy(True)

        def done(result: Any) -> None:
            try:
                on_done(result)
            finally:
                self._busy(False)

        def error(text: str) -> None:
            self.say(text, error=True)
            self._busy(False)

        def cancelled() -> None:
            if on_cancel is not None:
                on_cancel()
            else:
                self.say("stopped")
            self._busy(False)

        self.job = BackgroundJob(work, on_event=on_event, on_done=done, on_error=error, on_cancel=cancelled).start()
        if wait:
            self.job.join()
        return self.job

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()

    def _busy(self, busy: bool) -> None:
        for b in self.buttons:
            b.disabled = busy
        if self.stop_button is not None:
            self.stop_button.disabled = not busy
        self.finished(busy)

    def finished(self, busy: bool) -> None:
        """A hook for what else a panel changes when a job starts (``busy``) or ends."""
