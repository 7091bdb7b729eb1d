"""The fine-tune launcher: a form built from a notebook's parameters cell, Launch / Stop, a live loss
curve read from the run folder's events, a log tail, and a link to the executed notebook when done."""

from __future__ import annotations

import html
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go

from workbench.events import Event
from workbench.launch import Launch, LaunchError, declared_parameters, hardware
from workbench.progressive import ProgressiveConfig

from .estimate_line import EstimateLine, original_length
from .figures import BASE_LAYOUT
from .panel import FigureOutput, Panel

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SKIP = {"live"}  # set by the launcher itself


class FinetuneLauncher(Panel):
    def __init__(self, notebook: str | Path = NOTEBOOKS / "05_progressive_extension.ipynb", output: str | None = None,
                 values: dict[str, Any] | None = None, processes: int = 1) -> None:
        super().__init__()
        self.notebook = Path(notebook)
        self.declared = declared_parameters(self.notebook)
        values = values or {}
        self.fields: dict[str, W.Text] = {}
        for name, p in self.declared.items():
            if name in SKIP:
                continue
            default = values.get(name)
            text = json.dumps(default) if default is not None else p["default"]
            self.fields[name] = W.Text(value=str(text), description=name, tooltip=p["help"],
                                       style={"description_width": "140px"}, layout=W.Layout(width="520px"))
        cpus = os.cpu_count() or 1
        gpus = hardware(1)["gpus"]
        self.processes = W.IntSlider(value=processes, min=1, max=max(gpus, cpus, 2), description="processes",
                                     style={"description_width": "140px"})
        self.output = W.Text(value=output or f"runs/launch/{self.notebook.name}", description="executed notebook",
                             style={"description_width": "140px"}, layout=W.Layout(width="520px"))
        self.hardware = W.HTML()
        self.launch_button = W.Button(description="Launch", icon="rocket", button_style="primary")
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True)
        self.log = W.HTML()
        self.link = W.HTML()
        self.loss = FigureOutput("Training loss: press Launch (the curve is read from the run's events)", width=620)
        self.losses: dict[int, dict] = {}  # step -> its train.step event; a resumed run redoes steps after its checkpoint
        self.job: Launch | None = None  # type: ignore[assignment] - a launch, not a BackgroundJob
        self._stopping = False
        self._last_draw = 0.0
        self.estimate = EstimateLine("fine-tune", self._plan, list(self.fields.values()))
        self.processes.observe(lambda _: self._show_hardware(), names="value")
        self.launch_button.on_click(lambda _: self.launch())
        self.stop_button.on_click(lambda _: self.stop())
        self._show_hardware()

    def _show_hardware(self) -> None:
        self.hardware.value = f"<i>will use: {html.escape(hardware(self.processes.value)['words'])}</i>"

    @property
    def widget(self) -> W.Widget:
        form = W.VBox([W.HTML(f"<b>{html.escape(self.notebook.name)}</b> parameters"), *self.fields.values(),
                       self.processes, self.output, self.hardware,
                       W.HBox([self.launch_button, self.stop_button, self.estimate.widget])],
                      layout=W.Layout(min_width="540px"))
        return W.VBox([W.HBox([form, self.loss.widget]), self.status, self.link, self.log])

    def _plan(self) -> tuple[str, str, str, list[tuple[int, int]], int] | None:
        """What Launch would train, for a progressive notebook: stage 1's fine-tune at L1 (the most memory of its
        stages); None for a notebook without those parameters or while a field does not parse."""
        p = self.parameters()
        L0 = original_length(str(p.get("model")))
        if L0 is None or not {"stage1_multiple", "stage2_multiple"} <= set(p):
            return None
        try:
            L1 = int(p["stage1_multiple"]) * L0
            cfg = ProgressiveConfig.with_overrides(L1, int(p["stage2_multiple"]) * L1, train=p.get("train") or {})
        except (ValueError, TypeError):
            return None
        length, steps, batch, engine = cfg.finetune_plan()
        return str(p["model"]), engine, "fp32", [(length, steps)], batch

    def parameters(self) -> dict[str, Any]:
        out = {}
        for name, field in self.fields.items():
            text = field.value.strip()
            try:
                out[name] = json.loads(text)
            except json.JSONDecodeError:
                out[name] = text  # a bare string
        return out

    def launch(self) -> Launch | None:
        if self.job is not None and self.job.running:
            return None
        self.losses, self.link.value, self.log.value = {}, "", ""
        self._stopping = False
        refusal = self.estimate.refusal()
        if refusal:
            self.status.value = f"<span style='color:#b2182b'>⚠ {html.escape(refusal)}</span>"
            return None
        try:
            job = Launch(self.notebook, self.parameters(), self.output.value, processes=self.processes.value,
                         on_event=self._on_event, on_line=self._on_line)
        except LaunchError as e:
            self.status.value = f"<span style='color:#b2182b'>⚠ {html.escape(str(e))}</span>"
            return None
        self.job = job.start()
        self.launch_button.disabled, self.stop_button.disabled = True, False
        self.status.value = f"running on {html.escape(job.hardware['words'])} ..."
        threading.Thread(target=self._wait, daemon=True).start()
        return job

    def stop(self) -> None:
        """Stop every process of the launch; the status says *stopped* once they have ended and their last
        events are drawn (in a thread: the kernel stays responsive meanwhile)."""
        if self.job is not None and self.job.running:
            self._stopping = True
            self.stop_button.disabled = True
            self.status.value = "stopping ..."
            threading.Thread(target=self.job.stop, daemon=True).start()

    def _wait(self) -> None:
        assert self.job is not None
        result = self.job.wait()
        self._draw()
        if self._stopping:
            at = f" after step {max(self.losses)}" if self.losses else ""
            self.status.value = f"stopped{at}; Launch again to resume where it stopped"
        elif result.ok:
            self.status.value = f"done in {result.seconds:.0f} s"
            self.link.value = f"executed notebook: {_link(result.output)}"
        else:
            self.status.value = (f"<span style='color:#b2182b'>⚠ failed (exit {result.returncode}); see the log "
                                 "below</span>")
        self.launch_button.disabled, self.stop_button.disabled = False, True

    def _on_line(self, line: str) -> None:
        lines = (self.job.lines if self.job else [])[-15:]
        self.log.value = "<pre style='font-size:11px;max-height:220px;overflow:auto'>" + html.escape(
            "\n".join(lines)) + "</pre>"

    def _on_event(self, event: Event) -> None:
        if event.kind == "train.step":
            self.losses[event.data["step"]] = event.data
            if time.time() - self._last_draw > 0.5:
                self._draw()
        elif event.kind == "train.resume":
            at = event.data["step"]
            self.losses = {k: v for k, v in self.losses.items() if k <= at}
            self.status.value = f"fine-tuning resumed from its checkpoint at step {at} of {event.data['steps']}"
        elif event.kind.startswith("progressive."):
            self.status.value = f"stage {html.escape(str(event.data.get('stage')))}: {event.kind.split('.')[1]}"

    @property
    def steps(self) -> list[dict]:
        """The loss curve's points in step order (the launch's whole history, including before a resume)."""
        return [self.losses[k] for k in sorted(self.losses)]

    def _draw(self) -> None:
        self._last_draw = time.time()
        steps = self.steps
        if not steps:
            self.loss.message("Training loss: no fine-tuning step yet (the pipeline searches first)")
            return
        fig = go.Figure(layout={**BASE_LAYOUT, "title": "Training loss (from the run's events)",
                                "xaxis_title": "step", "yaxis_title": "loss"})
        fig.add_scatter(x=[s["step"] for s in steps], y=[s["loss"] for s in steps], mode="lines", name="loss",
                        line=dict(color="#1f77b4"))
        self.loss.show(fig)


def _link(path: str) -> str:
    """A link JupyterLab opens (relative to the notebook's folder, the kernel's working directory), or the
    path as text when the file lies outside it (Lab can only open files under its root)."""
    rel = os.path.relpath(os.path.abspath(path), os.getcwd())
    if rel.startswith(".."):
        return f"<code>{html.escape(path)}</code>"
    return f"<a href='{html.escape(rel)}' target='_blank'>{html.escape(rel)}</a>"
