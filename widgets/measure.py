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
import plotly.graph_objects as go

from workbench.data import samples
from workbench.evaluate import PerplexityResult, perplexity
from workbench.hf import model_geometry
from workbench.rope import RopeSpec
from workbench.rope import resample_factors as resample  # noqa: F401 - the explorer's name for it

from .figures import BASE_LAYOUT, color_of
from .jobs import BackgroundJob

MODELS = [("teaching model (L0 256, seconds)", "teaching"), ("teaching-ci: smaller and weaker, shipped", "teaching-ci"),
          ("SmolLM2-135M (L0 8192, minutes per document)", "smollm2")]


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


class MeasurePanel:
    """Model choice, Measure / Stop, progress, a loss-by-position plot and a results table."""

    def __init__(self, get_spec: Any, model: str = "teaching", corpus: str = "shakespeare") -> None:
        self.get_spec = get_spec
        self.corpus = corpus
        options = MODELS if model in {v for _, v in MODELS} else [*MODELS, (model, model)]
        self.model = W.Dropdown(options=options, value=model, description="model", style={"description_width": "60px"},
                                layout=W.Layout(width="420px"))
        self.n_documents = W.IntSlider(value=4 if model == "teaching" else 1, min=1, max=8, description="documents",
                                       style={"description_width": "80px"}, layout=W.Layout(width="280px"))
        self.button = W.Button(description="Measure", icon="play", button_style="primary", layout=W.Layout(width="120px"))
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True, layout=W.Layout(width="90px"))
        self.progress = W.FloatProgress(value=0, min=0, max=1, layout=W.Layout(width="300px"))
        self.status = W.HTML()
        self.table = W.HTML()
        self.figure = go.FigureWidget(layout={**BASE_LAYOUT, "width": 1000, "height": 330,
                                              "title": "Loss by position (press Measure)",
                                              "xaxis_title": "position", "yaxis_title": "mean NLL (nats)"})
        self.results: list[PerplexityResult] = []
        self.job: BackgroundJob | None = None
        self._models: dict[str, Any] = {}
        self._baselines: dict[tuple[str, int], PerplexityResult] = {}
        self._lock = threading.Lock()
        self.model.observe(self._model_changed, names="value")
        self.button.on_click(lambda _: self.measure())
        self.stop_button.on_click(lambda _: self.stop())

    @property
    def widget(self) -> W.Widget:
        return W.VBox([W.HTML("<b>Measure on a real model</b>: perplexity and loss by position at s × L0 under "
                              "the current settings, beside the unscaled model"),
                       W.HBox([self.model, self.n_documents, self.button, self.stop_button, self.progress]),
                       self.status, self.figure, self.table])

    def _model_changed(self, change: dict) -> None:
        self.n_documents.value = 4 if change["new"] == "teaching" else 1

    def _load(self, name: str) -> Any:
        if name not in self._models:
            from workbench.models import load_model

            self._models[name] = load_model(name)
        return self._models[name]

    def measure(self, wait: bool = False) -> BackgroundJob | None:
        """Start a measurement of the current settings (``wait``: block until done, for scripts and tests)."""
        if self.job is not None and self.job.running:
            self.status.value = "already measuring; press Stop first"
            return None
        spec = self.get_spec()
        if spec is None:
            self.status.value = "<span style='color:#b2182b'>fix the settings first</span>"
            return None
        name, n_docs = self.model.value, self.n_documents.value
        self.button.disabled, self.stop_button.disabled = True, False
        self.progress.value = 0
        self.status.value = f"loading {name} ..."
        t0 = time.time()

        def work(sink: Any) -> tuple[list[PerplexityResult], str | None]:
            lm = self._load(name)
            model_spec, note = translate(spec, lm.model)
            length = model_spec.target_length
            docs = samples(lm.tokenizer, self.corpus, "heldout", length, n_docs, per_document=8, progress=False)
            runs = [] if (name, length) in self._baselines else [("no scaling", None)]
            runs.append((f"{model_spec.method} s={model_spec.factor:g}", model_spec))
            out = []
            for k, (label, sp) in enumerate(runs):
                def progress_sink(event: Any, k: int = k, label: str = label) -> None:
                    sink(event)
                    d = event.data
                    if event.kind == "ppl.layer":
                        done = (d["index"] + d["layer"] / d["layers"]) / d["of"]
                        self.progress.value = (k + done) / len(runs)
                        self.status.value = (f"{html.escape(label)} @ {length}: document {d['index'] + 1}/{d['of']}, "
                                             f"layer {d['layer']}/{d['layers']} ({time.time() - t0:.0f} s)")

                r = perplexity(lm.model, docs, spec=sp, label=label, length=length, progress=False, sink=progress_sink)
                if sp is None:
                    self._baselines[(name, length)] = r
                out.append(r)
            return out, note

        def done(value: tuple[list[PerplexityResult], str | None]) -> None:
            runs, note = value
            length = runs[-1].length
            baseline = self._baselines[(name, length)]
            with self._lock:
                self.results.append(runs[-1])
            self._draw(baseline)
            r = runs[-1]
            self.status.value = (f"<b>{html.escape(r.label)}</b> on {name} at {length} tokens: PPL {r.ppl:.2f} "
                                 f"(no scaling {baseline.ppl:.2f}); last quarter {r.tail_ppl():.2f} vs "
                                 f"{baseline.tail_ppl():.2f}; {time.time() - t0:.0f} s"
                                 + (f"<br><i>{html.escape(note)}</i>" if note else ""))
            self._finish()

        def error(text: str) -> None:
            self.status.value = f"<span style='color:#b2182b'>⚠ {html.escape(text)}</span>"
            self._finish()

        def cancelled() -> None:
            self.status.value = "stopped"
            self._finish()

        self.job = BackgroundJob(work, on_done=done, on_error=error, on_cancel=cancelled).start()
        if wait:
            self.job.join()
        return self.job

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()

    def _finish(self) -> None:
        self.button.disabled, self.stop_button.disabled = False, True
        self.progress.value = 1 if self.job is not None and not self.job.cancelled else 0

    def _draw(self, baseline: PerplexityResult) -> None:
        """Baseline plus the last five measurements at the baseline's length."""
        shown = [r for r in self.results if r.length == baseline.length][-5:]
        L0 = baseline.length
        with self.figure.batch_update():
            self.figure.data = []
            for i, r in enumerate([baseline, *shown]):
                x = [(k + 0.5) * r.bucket_size for k in range(len(r.per_position_nll))]
                self.figure.add_scatter(x=x, y=r.per_position_nll, mode="lines", name=f"{r.label} (PPL {r.ppl:.2f})",
                                        line=dict(color=color_of(r.label, i), width=3 if r is shown[-1] else 1.5,
                                                  dash="dot" if r is baseline else None))
            self.figure.layout.title = f"Loss by position at {L0} tokens"
        rows = "".join(f"<tr><td>{html.escape(r.label)}</td><td>{r.length}</td><td>{r.ppl:.2f}</td>"
                       f"<td>{r.tail_ppl():.2f}</td><td>{r.seconds:.0f}</td></tr>" for r in [baseline, *shown])
        self.table.value = ("<table><tr><th>setting</th><th>tokens</th><th>PPL</th><th>last-quarter PPL</th>"
                            f"<th>s</th></tr>{rows}</table>")
