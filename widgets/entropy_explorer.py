"""The entropy explorer: how spread attention is, by position, layer and head, before and after extension.

Pick a model, a length (a multiple of its L0), a method and an extra temperature; Compute runs in the
background (Stop works) and draws entropy by position for: no scaling, the method, the method without
its attention factor, and the method with logits multiplied by the temperature — plus a layer x head
map of the method's entropy change against no scaling.
"""

from __future__ import annotations

import html
import time
from typing import Any

import ipywidgets as W

from workbench.data import samples
from workbench.entropy import EntropyResult, attention_entropies, without_attention_factor
from workbench.hf import model_geometry, spec_for_model
from workbench.rope import methods_with

from .estimate_line import EstimateLine, original_length
from .figures import entropy_heatmap_figure, entropy_position_figure, method_specs
from .jobs import BackgroundJob
from .panel import FigureOutput, Panel, model_picker


class EntropyExplorer(Panel):
    def __init__(self, model: str = "teaching", length_multiple: int = 4, method: str = "yarn",
                 corpus: str = "shakespeare") -> None:
        super().__init__()
        style = {"description_width": "110px"}
        self.corpus = corpus
        self.model = model_picker(model)
        self.multiple = W.SelectionSlider(options=[1, 2, 4, 8, 16], value=length_multiple, description="length × L0",
                                          style=style, layout=W.Layout(width="320px"))
        rescalings = [m for m in methods_with("evaluate") if m != "default"]  # compared with no scaling
        self.method = W.Dropdown(options=rescalings, value=method, description="method", style=style,
                                 layout=W.Layout(width="260px"))
        self.temperature = W.FloatSlider(value=1.0, min=0.5, max=2.0, step=0.05, description="extra logits ×",
                                         style=style, layout=W.Layout(width="320px"), continuous_update=False)
        # 0 = every row (a None value would show as an empty dropdown)
        self.sampled = W.Dropdown(options=[("all query rows", 0), ("64 rows per bucket", 64),
                                           ("16 rows per bucket", 16)], value=0, description="queries",
                                  style=style, layout=W.Layout(width="320px"))
        self.button = W.Button(description="Compute", icon="play", button_style="primary")
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True)
        self.buttons = [self.button]
        self.progress = W.FloatProgress(value=0, min=0, max=1, layout=W.Layout(width="300px"))
        self.curves = FigureOutput("Entropy by query position: press Compute", height=360)
        self.heatmap = FigureOutput("Entropy change by layer and head: press Compute", height=360)
        self.results: list[EntropyResult] = []
        self.estimate = EstimateLine("Compute", self._plan, [self.model, self.multiple])
        self.button.on_click(lambda _: self.compute())
        self.stop_button.on_click(lambda _: self.stop())

    @property
    def widget(self) -> W.Widget:
        controls = W.VBox([W.HBox([self.model, self.multiple]), W.HBox([self.method, self.temperature]),
                           W.HBox([self.sampled, self.button, self.stop_button, self.progress]),
                           self.estimate.widget])
        return W.VBox([controls, self.status, W.HBox([self.curves.widget, self.heatmap.widget])])

    def _plan(self) -> tuple[str, str, str, list[tuple[int, int]]] | None:
        """What Compute would run: one forward of length x L0 with and without the method."""
        L0 = original_length(self.model.value)
        return None if L0 is None else (self.model.value, "window", "fp32", [(self.multiple.value * L0, 2)])

    def compute(self, wait: bool = False) -> BackgroundJob | None:
        if self.running:
            return None
        refusal = self.estimate.refusal()
        if refusal:
            self.say(refusal, error=True)
            return None
        name, multiple, method = self.model.value, self.multiple.value, self.method.value
        t, sampled = float(self.temperature.value), (self.sampled.value or None)
        self.progress.value = 0
        self.say(f"loading {html.escape(name)} ...")
        t0 = time.time()

        def work(sink: Any) -> list[EntropyResult]:
            lm = self.load(name)
            L0 = model_geometry(lm.model).original_max_position_embeddings
            length = L0 * multiple
            unscaled = spec_for_model(lm.model, "default", target_length=length)
            spec = method_specs(unscaled, [method])[method]
            doc = samples(lm.tokenizer, self.corpus, "heldout", length, 1, progress=False)[0].tokens
            settings = [("no scaling", None, (1.0,)), (method, spec, (1.0, t) if t != 1.0 else (1.0,))]
            if spec.frequencies().attention_factor != 1.0:
                settings.append((f"{method} without attention factor", without_attention_factor(spec), (1.0,)))
            n_layers = lm.model.config.num_hidden_layers
            out: list[EntropyResult] = []
            for k, (label, sp, temps) in enumerate(settings):
                def on_event(event: Any, k: int = k, label: str = label) -> None:
                    sink(event)
                    if event.kind == "entropy.layer":
                        self.progress.value = (k + (event.data["layer"] + 1) / n_layers) / len(settings)
                        self.status.value = f"{html.escape(label)} @ {length}: layer {event.data['layer'] + 1}/{n_layers}"

                rs = attention_entropies(lm.model, doc, spec=sp, label=label, queries_per_bucket=sampled,
                                         temperatures=temps, sink=on_event)
                if len(rs) > 1:
                    rs[1].label = f"{label}, logits × {t:g}"
                out.extend(rs)
            return out

        def done(results: list[EntropyResult]) -> None:
            self.results = results
            self.curves.show(entropy_position_figure(results, results[0].length // multiple))
            self.heatmap.show(entropy_heatmap_figure(results[1], results[0]))
            last = {r.label: sum(r.by_position()[-4:]) / 4 for r in results}
            self.say("mean entropy over the last eighth of positions: " + "; ".join(
                f"{html.escape(k)} {v:.3f}" for k, v in last.items()) + f" nats ({time.time() - t0:.0f} s)")

        return self.start_job(work, done, wait=wait)

