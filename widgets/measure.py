"""The frequency explorer's Measure button: what the current slider settings do to a real model.

Applies the explorer's method and extension ratio s to a model (the teaching model by default,
SmolLM2 on request), measures perplexity and the per-position loss at ``s x L0`` in the background,
and draws the loss curve beside the unscaled model's.
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any

import ipywidgets as W

from workbench.data import samples
from workbench.evaluate import PerplexityResult, perplexity
from workbench.hf import model_geometry
from workbench.rope import RopeSpec
from workbench.rope import resample_factors as resample  # noqa: F401 - the explorer's name for it

from .estimate_line import EstimateLine, original_length
from .figures import position_loss_figure
from .jobs import BackgroundJob
from .panel import MODELS, FigureOutput, Panel, model_picker

__all__ = ["MODELS", "MeasurePanel", "translate"]  # MODELS: older notebooks import it from here


def translate(spec: RopeSpec, model: Any) -> tuple[RopeSpec, str | None]:
    """The explorer's spec for ``model``: itself if the geometry matches, else the same method and s."""
    g = model_geometry(model)
    if (spec.head_dim, spec.rope_theta, spec.original_max_position_embeddings) == (
            g.head_dim, g.rope_theta, g.original_max_position_embeddings):
        return spec, None
    new, adapted = spec.on_geometry(g.head_dim, g.rope_theta, g.original_max_position_embeddings)
    note = (f"the explorer shows head_dim {spec.head_dim}, base {spec.rope_theta:g}, L0 "
            f"{spec.original_max_position_embeddings}; measured with the model's (head_dim {g.head_dim}, base "
            f"{g.rope_theta:g}, L0 {g.original_max_position_embeddings}) at the same s = {spec.factor:g}"
            + (f" ({adapted})" if adapted else ""))
    return new, note


class MeasurePanel(Panel):
    """Model choice, Measure / Stop, progress, a loss-by-position plot and a results table."""

    def __init__(self, get_spec: Any, model: str = "teaching", corpus: str = "shakespeare") -> None:
        super().__init__()
        self.get_spec = get_spec
        self.corpus = corpus
        self.model = model_picker(model)
        self.n_documents = W.IntSlider(value=4 if model == "teaching" else 1, min=1, max=8, description="documents",
                                       style={"description_width": "80px"}, layout=W.Layout(width="280px"))
        self.button = W.Button(description="Measure", icon="play", button_style="primary", layout=W.Layout(width="120px"))
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True, layout=W.Layout(width="90px"))
        self.buttons = [self.button]
        self.progress = W.FloatProgress(value=0, min=0, max=1, layout=W.Layout(width="300px"))
        self.table = W.HTML()
        self.figure = FigureOutput("Loss by position: press Measure to measure the current settings on the model",
                                   width=1000, height=360)
        self.results: list[PerplexityResult] = []
        self._baselines: dict[tuple[str, int], PerplexityResult] = {}
        self._L0: dict[str, int] = {}
        self._lock = threading.Lock()
        self.model.observe(self._model_changed, names="value")
        self.estimate = EstimateLine("Measure", self._plan, [self.model, self.n_documents])
        self.button.on_click(lambda _: self.measure())
        self.stop_button.on_click(lambda _: self.stop())

    @property
    def widget(self) -> W.Widget:
        return W.VBox([W.HTML("<b>Measure on a real model</b>: perplexity and loss by position at the target length "
                              "(s × L0) under the current settings, beside the unscaled model"),
                       W.HBox([self.model, self.n_documents, self.button, self.stop_button, self.progress]),
                       self.estimate.widget,
                       self.status, self.figure.widget, self.table])

    def _model_changed(self, change: dict) -> None:
        self.n_documents.value = 4 if change["new"] == "teaching" else 1

    def _plan(self) -> tuple[str, str, str, list[tuple[int, int]]] | None:
        """What Measure would compute: the documents at s x L0, unscaled and under the settings."""
        spec, L0 = self.get_spec(), original_length(self.model.value)
        if spec is None or L0 is None:
            return None
        return self.model.value, "window", "fp32", [(round(spec.factor * L0), 2 * self.n_documents.value)]

    def measure(self, wait: bool = False) -> BackgroundJob | None:
        """Start a measurement of the current settings (``wait``: block until done, for scripts and tests)."""
        if self.running:
            self.say("already measuring; press Stop first")
            return None
        spec = self.get_spec()
        if spec is None:
            self.say("fix the settings first", error=True)
            return None
        self.estimate.refresh()  # the explorer's settings may have moved since
        refusal = self.estimate.refusal()
        if refusal:
            self.say(refusal, error=True)
            return None
        name, n_docs = self.model.value, self.n_documents.value
        self.progress.value = 0
        self.say(f"loading {html.escape(name)} ...")
        t0 = time.time()

        def work(sink: Any) -> tuple[list[PerplexityResult], str | None]:
            lm = self.load(name)
            model_spec, note = translate(spec, lm.model)
            self._L0[name] = model_spec.original_max_position_embeddings
            target_length = model_spec.target_length
            self.say(f"reading {n_docs} held-out document(s) of {target_length} tokens ... ({time.time() - t0:.0f} s)")
            docs = samples(lm.tokenizer, self.corpus, "heldout", target_length, n_docs, per_document=8, progress=False)
            runs = [] if (name, target_length) in self._baselines else [("no scaling", None)]
            runs.append((f"{model_spec.method} s={model_spec.factor:g}", model_spec))
            out = []
            for k, (label, sp) in enumerate(runs):
                r = perplexity(lm.model, docs, spec=sp, label=label, length=target_length, progress=False,
                               sink=self._progress_sink(sink, k, len(runs), label, target_length, t0))
                if sp is None:
                    self._baselines[(name, target_length)] = r
                out.append(r)
            return out, note

        def done(value: tuple[list[PerplexityResult], str | None]) -> None:
            runs, note = value
            r = runs[-1]
            baseline = self._baselines[(name, r.length)]
            with self._lock:
                self.results.append(r)
            self._draw(baseline, self._L0.get(name))
            self.progress.value = 1
            self.say(f"<b>{html.escape(r.label)}</b> on {html.escape(name)} at {r.length} tokens: PPL {r.ppl:.2f} "
                     f"(no scaling {baseline.ppl:.2f}); last quarter {r.tail_ppl():.2f} vs {baseline.tail_ppl():.2f}; "
                     f"{time.time() - t0:.0f} s" + (f"<br><i>{html.escape(note)}</i>" if note else ""))

        return self.start_job(work, done, wait=wait, on_cancel=self._cancelled)

    def _progress_sink(self, sink: Any, k: int, n_runs: int, label: str, target_length: int, t0: float) -> Any:
        """Forward events to the job's sink (Stop) and show the layer-by-layer progress."""
        def progress_sink(event: Any) -> None:
            sink(event)
            d = event.data
            if event.kind == "ppl.layer":
                done = (d["index"] + d["layer"] / d["layers"]) / d["of"]
                self.progress.value = (k + done) / n_runs
                self.say(f"{html.escape(label)} @ {target_length} tokens: document {d['index'] + 1}/{d['of']}, "
                         f"layer {d['layer']}/{d['layers']} ({time.time() - t0:.0f} s)")

        return progress_sink

    def _cancelled(self) -> None:
        self.progress.value = 0
        self.say("stopped")

    def _draw(self, baseline: PerplexityResult, original_length: int | None = None) -> None:
        """Baseline plus the last five measurements at the baseline's target length, smoothed (raw faintly)."""
        shown = [r for r in self.results if r.length == baseline.length][-5:]
        self.figure.show(position_loss_figure([baseline, *shown], original_length))
        rows = "".join(f"<tr><td>{html.escape(r.label)}</td><td>{r.length}</td><td>{r.ppl:.2f}</td>"
                       f"<td>{r.tail_ppl():.2f}</td><td>{r.seconds:.0f}</td></tr>" for r in [baseline, *shown])
        self.table.value = ("<table><tr><th>setting</th><th>target length (tokens)</th><th>PPL</th>"
                            f"<th>last-quarter PPL</th><th>seconds</th></tr>{rows}</table>")
