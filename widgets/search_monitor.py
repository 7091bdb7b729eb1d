"""The search monitor: start, stop and resume an evolutionary search, and watch it live.

Best and median perplexity per generation with the PI / NTK / YaRN seeds as reference lines, the
parents' factor curves with the best highlighted, a top-k table, elapsed time and token-forwards.
It can also open a run folder (finished, or still running in another process) and replay it.
"""

from __future__ import annotations

import html
import math
import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets as W

from workbench.events import Event, read_events
from workbench.search import HeldoutReport, SearchConfig, run_search
from workbench.search.standing import whole_search

from .estimate_line import EstimateLine
from .figures import search_factors_figure, search_progress_figure
from .jobs import BackgroundJob, Cancelled
from .panel import FigureOutput, Panel, model_picker


class SearchMonitor(Panel):
    """Controls for one search and live plots of its events (from a running job or a run folder)."""

    def __init__(self, model: str = "teaching", run_dir: str = "runs/search", config: SearchConfig | None = None,
                 top_k: int = 8, redraw_every: float = 0.5, report_documents: int = 20) -> None:
        super().__init__()
        self.report_documents = report_documents  # held-out documents of the report after the search
        style = {"description_width": "90px"}
        self.config = config
        self.model = model_picker(model)
        self.run_dir = W.Text(value=run_dir, description="run folder", style=style, layout=W.Layout(width="420px"))
        self.start_button = W.Button(description="Start", icon="play", button_style="primary")
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True)
        self.resume_button = W.Button(description="Resume", icon="redo")
        self.open_button = W.Button(description="Open run folder", icon="folder-open")
        self.progress = W.FloatProgress(value=0, min=0, max=1, layout=W.Layout(width="300px"))
        self.buttons = [self.start_button, self.resume_button]
        self.table = W.HTML()
        self.curve = FigureOutput("Fitness per generation: press Start, or open a run folder")
        self.factors = FigureOutput("Factor curves: press Start, or open a run folder")
        self.top_k, self.redraw_every = top_k, redraw_every
        self.result: Any = None
        self._draw_lock = threading.Lock()
        self._follow: threading.Thread | None = None
        self._following = threading.Event()
        self.reset()
        self.estimate = EstimateLine("Start", self._plan, [self.model])
        self.start_button.on_click(lambda _: self.start())
        self.resume_button.on_click(lambda _: self.start(resume=True))
        self.stop_button.on_click(lambda _: self.stop())
        self.open_button.on_click(lambda _: self.open(self.run_dir.value))

    # ---- state fed by events --------------------------------------------------------------------
    def reset(self) -> None:
        self.generations: list[dict] = []
        self.baselines: dict[str, float] = {}
        self.baseline_factors: dict[str, list[float]] = {}
        self.evals: list[dict] = []
        self.budget = 0
        self.t0 = time.time()
        self.tokens = 0
        self.done: dict | None = None
        self.report: HeldoutReport | None = None
        self._last_draw = 0.0

    def handle(self, event: Event, force: bool = False) -> None:
        """Update from one search event (live or replayed)."""
        d = event.data
        if event.kind == "search.start":
            # a resumed run starts over and replays its journal (evaluations and generations again), so the
            # events after its start are the whole picture: without this a replay showed generations 0,1,0,1,2,..
            self.reset()
            self.budget = d["budget"]
        elif event.kind == "search.baselines":
            self.baselines.update(d["fitness"])
            self.baseline_factors.update(d["factors"])
        elif event.kind == "search.eval":
            self.evals.append(d)
            self.tokens = d["tokens_total"]
        elif event.kind == "search.generation":
            self.generations.append(d)
        elif event.kind == "search.done":
            self.done = d
        elif event.kind == "search.report":
            self.report = HeldoutReport.from_dict(d)
        if force or event.kind in ("search.generation", "search.done", "search.report") or \
                time.time() - self._last_draw > self.redraw_every:
            self.draw()

    def draw(self) -> None:
        with self._draw_lock:  # the search thread and a follow thread may both draw
            self._draw()

    def _draw(self) -> None:
        self._last_draw = time.time()
        gens = [g for g in self.generations if math.isfinite(g["best"])]
        if gens or self.baselines:
            self.curve.show(search_progress_figure(self.generations, self.baselines))
        else:
            self.curve.message("Fitness per generation: waiting for the first generation ...")
        last = self.generations[-1] if self.generations else {}
        if last.get("best_factors") or self.baseline_factors:
            self.factors.show(search_factors_figure(last.get("best_factors", []),
                                                    last.get("population_factors", [])[1:], self.baseline_factors))
        else:
            self.factors.message("Factor curves: waiting for the seeds ...")
        complete = sorted((e for e in self.evals if e["complete"]), key=lambda e: e["fitness"])[: self.top_k]
        rows = "".join(f"<tr><td>{i + 1}</td><td>{e['fitness']:.3f}</td><td>{e['n_hat']}</td><td>{e['stage']} "
                       f"{e['generation'] if e['generation'] >= 0 else ''}</td><td>{e['factors'][0]:.2f} … "
                       f"{e['factors'][len(e['factors']) // 2]:.2f} … {e['factors'][-1]:.2f}</td></tr>"
                       for i, e in enumerate(complete))
        self.table.value = ("<table><tr><th>#</th><th>PPL</th><th>n̂</th><th>found in</th><th>λ first … middle … "
                            f"last</th></tr>{rows}</table>")
        # the budget counts the factor search; the n̂ stage evaluates the best curves again with other n̂
        n = sum(e["stage"] != "n_hat" for e in self.evals)
        n_hat = len(self.evals) - n
        stopped = sum(not e["complete"] for e in self.evals)
        replayed = sum(e.get("replayed", False) for e in self.evals)
        self.progress.value = min(1.0, n / self.budget) if self.budget else 0
        # the best is the table's first row (the n̂ stage may beat the last generation's best)
        top = complete[0]["fitness"] if complete else gens[-1]["best"] if gens else None
        best = f"best PPL {top:.3f}; " if top is not None else ""
        if self.done and self.done.get("stopped"):
            state = "<b>stopped</b> (press Resume to continue from the journal):"
        elif self.done and self.report is None and self.job is not None and self.result is None:
            state = "<b>search done</b>, held-out report running ...:"
        elif self.done:
            state = "<b>done</b>:"
        else:
            state = "running:" if self.running else ""
        extra = ""
        if self.report:
            extra = f"<br>{html.escape(self.report.summary())}"
        racing = (self.done or {}).get("racing", "")
        extra_n_hat = f" + {n_hat} in the n̂ stage" if n_hat else ""
        self.status.value = (f"{state} {best}{n} of {self.budget} evaluations{extra_n_hat} ({stopped} stopped early by "
                             f"{racing + ' ' if racing else ''}racing, {replayed} from the journal); "
                             f"{self.tokens:,} token-forwards; "
                             f"{time.time() - self.t0:.0f} s{extra}")

    # ---- actions ----------------------------------------------------------------------------------
    @property
    def widget(self) -> W.Widget:
        return W.VBox([W.HBox([self.model, self.run_dir]),
                       W.HBox([self.start_button, self.stop_button, self.resume_button, self.open_button, self.progress]),
                       self.estimate.widget, self.status, W.HBox([self.curve.widget, self.factors.widget]), self.table])

    def _plan(self) -> tuple[str, str, str, list[tuple[int, int]]] | None:
        """What Start would read: the budget's evaluations, each on every fitness window (racing may stop some)."""
        c = self.config
        if c is None:
            return None
        return (self.model.value, "stream", c.dtype,
                [(c.target_length, c.evaluations_budget * c.n_documents * c.per_document)])

    def start(self, resume: bool = False, wait: bool = False) -> BackgroundJob | None:
        if self.running:
            return None
        if self.config is None:
            self.say("no search configuration given", error=True)
            return None
        refusal = self.estimate.refusal()
        if refusal:
            self.say(refusal, error=True)
            return None
        self._following.clear()
        self.reset()
        self.result = None
        name, folder, config = self.model.value, self.run_dir.value, self.config
        self.say(f"loading {html.escape(name)} ...")

        def work(sink: Any) -> Any:
            lm = self.load(name)

            def stop() -> bool:
                return self.job is not None and self.job.stop_requested.is_set()

            def on_event(event: Event) -> None:
                try:
                    sink(event)
                except Cancelled:
                    pass  # the search sees stop() between evaluations and ends cleanly
                self.handle(event)

            return run_search(lm.model, lm.tokenizer, config, folder, resume=resume, sink=on_event, stop=stop,
                              model_name=name, report_documents=self.report_documents)

        def done(result: Any) -> None:
            self.result = result
            self.draw()  # the status line says done, or stopped and how to resume

        return self.start_job(work, done, wait=wait, on_cancel=self.draw)

    def stop(self) -> None:
        super().stop()
        self._following.clear()

    def replay(self, folder: str | Path, seconds: float = 30.0) -> threading.Thread | None:
        """Watch a search run folder's search again, paced (nothing is computed): the events that tell the whole
        search (:func:`~workbench.search.standing.whole_search`), one generation every ``seconds`` / generations.
        Stop ends the replay."""
        path = Path(folder) / "events.jsonl"
        if not path.exists():
            self.status.value = f"<span style='color:#b2182b'>⚠ {html.escape(str(path))} does not exist</span>"
            return None
        events = whole_search(read_events(path))
        pause = seconds / max(1, sum(e.kind == "search.generation" for e in events))
        self.reset()
        self._following.set()

        def play() -> None:
            for e in events:
                if not self._following.is_set():
                    break
                self.handle(e)
                if e.kind == "search.generation":
                    time.sleep(pause)
            self.draw()

        self._follow = threading.Thread(target=play, daemon=True)
        self._follow.start()
        return self._follow

    def open(self, folder: str | Path, follow: bool = True) -> None:
        """Replay a run folder's events; with ``follow``, keep reading while another process writes it."""
        path = Path(folder) / "events.jsonl"
        if not path.exists():
            self.status.value = f"<span style='color:#b2182b'>⚠ {html.escape(str(path))} does not exist</span>"
            return
        self.reset()
        seen = 0
        for e in read_events(path):
            self.handle(e)
            seen += 1
        self.draw()
        if not follow or self.done is not None:
            return
        self._following.set()

        def poll() -> None:
            nonlocal seen
            while self._following.is_set() and self.done is None:
                time.sleep(1.0)
                events = read_events(path)
                for e in events[seen:]:
                    self.handle(e)
                seen = len(events)
            self.draw()

        self._follow = threading.Thread(target=poll, daemon=True)
        self._follow.start()
