"""The evaluation dashboard: perplexity by length for several methods, loss by position, passkey, needles.

Run evaluates in the background and fills the plots as results arrive (Stop works); ``from_run``
shows the results a notebook or the CLI saved in a run folder.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import ipywidgets as W

from workbench.data import samples
from workbench.evaluate import (
    NeedleGridResult,
    PasskeyResult,
    PerplexityResult,
    compare_methods,
    needle_grid,
    passkey_accuracy,
)
from workbench.hf import model_geometry, spec_for_model
from workbench.rope import methods_with

from .estimate_line import EstimateLine, original_length
from .figures import (
    method_specs,
    needle_heatmap_figure,
    passkey_table,
    position_loss_figure,
    ppl_by_length_figure,
)
from .jobs import BackgroundJob
from .panel import FigureOutput, Panel, model_picker


class EvalDashboard(Panel):
    def __init__(self, model: str = "teaching", methods: tuple[str, ...] | None = None,
                 multiples: tuple[int, ...] = (1, 2, 4, 8),
                 corpus: str = "shakespeare", n_documents: int = 4, passkey_trials: int = 3) -> None:
        super().__init__()
        style = {"description_width": "100px"}
        self.model = model_picker(model)
        offered = tuple(methods_with("evaluate"))  # the methods that declare the role, simplest first
        self.methods = W.SelectMultiple(options=offered, value=tuple(methods) if methods else offered,
                                        description="methods", rows=len(offered), style=style)
        self.multiples = W.Text(value=" ".join(map(str, multiples)), description="lengths × L0", style=style)
        self.n_documents = W.IntSlider(value=n_documents, min=1, max=16, description="documents", style=style)
        self.passkey_trials = W.IntSlider(value=passkey_trials, min=0, max=10, description="passkey trials",
                                          style=style)
        self.needle_method = W.Dropdown(options=("none", *offered), value="yarn" if "yarn" in offered else "none",
                                        description="needle grid",
                                        style=style)
        self.corpus = corpus
        self.button = W.Button(description="Run", icon="play", button_style="primary")
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True)
        self.buttons = [self.button]
        self.ppl_fig = FigureOutput("Perplexity by evaluation length: press Run")
        self.loss_fig = FigureOutput("Loss by position: press Run")
        self.needle_fig = FigureOutput("Needle retrieval: choose a needle grid method and press Run")
        self.passkey_html = W.HTML()
        self.ppl: list[PerplexityResult] = []
        self.passkey: list[PasskeyResult] = []
        self.needles: NeedleGridResult | None = None
        self._L0: int | None = None
        self.estimate = EstimateLine("Run", self._plan, [self.model, self.methods, self.multiples, self.n_documents,
                                                         self.passkey_trials, self.needle_method])
        self.button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())

    def _plan(self) -> tuple[str, str, str, list[tuple[int, int]]] | None:
        """What Run would compute: every method on every document and passkey trial, and the needle grid (an answer
        and its NLL per depth), at each length."""
        L0 = original_length(self.model.value)
        try:
            multiples = sorted({int(x) for x in self.multiples.value.replace(",", " ").split()})
        except ValueError:
            return None
        if L0 is None or not multiples:
            return None
        m = len(self.methods.value)
        per_length = m * (self.n_documents.value + self.passkey_trials.value) + (
            10 if self.needle_method.value != "none" else 0)
        return self.model.value, "window", "fp32", [(k * L0, per_length) for k in multiples]

    @classmethod
    def from_results(cls, ppl: list[PerplexityResult], passkey: list[PasskeyResult] | None = None,
                     needles: NeedleGridResult | None = None, original_length: int | None = None) -> EvalDashboard:
        dash = cls()
        dash.ppl, dash.passkey, dash.needles, dash._L0 = list(ppl), list(passkey or []), needles, original_length
        dash.redraw()
        return dash

    @classmethod
    def from_run(cls, folder: str | Path, original_length: int | None = None) -> EvalDashboard:
        """Show ``ppl.json`` / ``passkey.json`` / ``needle_grid.json`` of a run folder."""
        folder = Path(folder)

        def load(name: str) -> Any:
            p = folder / f"{name}.json"
            return json.loads(p.read_text()) if p.exists() else None

        ppl = [PerplexityResult(**r) for r in load("ppl") or []]
        passkey = [PasskeyResult(**r) for r in load("passkey") or []]
        grid = load("needle_grid")
        return cls.from_results(ppl, passkey, NeedleGridResult(**grid) if grid else None, original_length)

    @property
    def widget(self) -> W.Widget:
        controls = W.HBox([W.VBox([self.model, self.multiples, self.n_documents, self.passkey_trials]),
                           W.VBox([self.methods, self.needle_method,
                                   W.HBox([self.button, self.stop_button, self.estimate.widget])])])
        return W.VBox([controls, self.status, W.HBox([self.ppl_fig.widget, self.loss_fig.widget]),
                       W.HBox([self.needle_fig.widget, self.passkey_html])])

    def redraw(self) -> None:
        if self.ppl:
            self.ppl_fig.show(ppl_by_length_figure(self.ppl, self._L0))
            top = max(r.length for r in self.ppl)
            self.loss_fig.show(position_loss_figure([r for r in self.ppl if r.length == top], self._L0))
        if self.passkey:
            self.passkey_html.value = passkey_table(self.passkey)
        if self.needles is not None:
            self.needle_fig.show(needle_heatmap_figure(self.needles))

    def run(self, wait: bool = False) -> BackgroundJob | None:
        if self.running:
            return None
        try:
            multiples = sorted({int(x) for x in self.multiples.value.replace(",", " ").split()})
        except ValueError:
            self.say("lengths × L0: whole numbers, e.g. 1 2 4 8", error=True)
            return None
        refusal = self.estimate.refusal()
        if refusal:
            self.say(refusal, error=True)
            return None
        name, methods = self.model.value, list(self.methods.value)
        n_docs, trials, needle_method = self.n_documents.value, self.passkey_trials.value, self.needle_method.value
        self.ppl, self.passkey, self.needles = [], [], None
        for f, what in ((self.ppl_fig, "perplexity"), (self.loss_fig, "loss by position")):
            f.message(f"{what}: measuring ...")
        self.needle_fig.message("needle retrieval: measured last" if needle_method != "none" else
                                "needle retrieval: no needle grid method chosen")
        t0 = time.time()

        def work(sink: Any) -> None:
            self.say(f"loading {html.escape(name)} ...")
            lm = self.load(name)
            self._L0 = model_geometry(lm.model).original_max_position_embeddings
            lengths = [m * self._L0 for m in multiples]
            unscaled = spec_for_model(lm.model, "default", target_length=lengths[-1])
            specs = {m: (None if m == "default" else s) for m, s in method_specs(unscaled, methods).items()}
            docs = samples(lm.tokenizer, self.corpus, "heldout", lengths[-1], n_docs, per_document=8, progress=False)

            def on_event(event: Any) -> None:
                sink(event)
                if event.kind == "ppl.result":
                    self.ppl.append(PerplexityResult(**event.data))
                    self.redraw()
                if event.kind in ("ppl.layer", "passkey.trial", "needle.trial"):
                    d = event.data
                    self.status.value = f"{html.escape(str(d.get('label')))}: {event.kind.split('.')[0]} ... " \
                                        f"({time.time() - t0:.0f} s)"

            self.status.value = "perplexity ..."
            self.ppl = compare_methods(lm.model, specs, docs, lengths, progress=False, sink=on_event)
            self.redraw()
            if trials:
                for m, spec in specs.items():
                    self.passkey.append(passkey_accuracy(lm.model, lm.tokenizer, lengths, n_trials=trials, spec=spec,
                                                         label=m, progress=False, sink=on_event))
                    self.redraw()
            if needle_method != "none":
                spec = specs.get(needle_method) or method_specs(unscaled, [needle_method])[needle_method]
                self.needles = needle_grid(lm.model, lm.tokenizer, [0.0, 0.25, 0.5, 0.75, 1.0], lengths,
                                           source=self.corpus, spec=None if needle_method == "default" else spec,
                                           label=needle_method, progress=False, sink=on_event)
                self.redraw()

        def done(_: Any) -> None:
            self.say(f"done in {time.time() - t0:.0f} s")

        return self.start_job(work, done, wait=wait)
