"""A classroom laptop, as the browser tests see it: two CPU-burning processes beside JupyterLab, Run All, and a
census of every figure on the page (how many have data to show, how many have drawn marks)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

REPO = Path(__file__).resolve().parents[2]
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"
BROKEN = ("Error displaying widget", "model not found", "Failed to initialize")

# A busy loop that ends by itself when the process that started it is gone (or after two hours), so a killed
# test run never leaves it behind.
BURN = ("import os, time\nparent, t0 = os.getppid(), time.time()\n"
        "while os.getppid() == parent and time.time() - t0 < 7200:\n    for _ in range(200000): pass\n")


@contextmanager
def cpu_burners(n: int = 2) -> Iterator[list[subprocess.Popen]]:
    """``n`` Python processes that each keep one core busy, killed on the way out whatever happened."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", BURN], start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def tiny_parameters() -> dict[str, dict[str, Any]]:
    """The parameters the headless notebook tests use (tests/notebooks), read from their file."""
    path = REPO / "tests" / "notebooks" / "test_notebooks.py"
    spec = importlib.util.spec_from_file_location("workbench_notebook_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TINY


def classroom_parameters() -> dict[str, dict[str, Any]]:
    """Per notebook, the parameters a class runs it with: its classroom preset (``workbench.demo.CLASSROOM``,
    documented in the notebook's first cell), else the tiny ones of the headless tests."""
    from workbench import demo

    return {**tiny_parameters(), **getattr(demo, "CLASSROOM", {})}


def notebook_names() -> list[str]:
    return sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


# --- the page -------------------------------------------------------------------------------------------------

CURRENT = "window.jupyterapp.shell.currentWidget"
KERNEL = f"(({CURRENT} || {{}}).sessionContext || {{}}).session && {CURRENT}.sessionContext.session.kernel"

# Every figure in the open notebook: a plotly output (JupyterLab's plotly renderer shows the bundle's PNG until the
# pointer enters it, then draws the plotly graph) or a graph drawn another way; for each, whether its PNG is shown
# and the marks its plotly graph has drawn: line paths with a non-empty d, marker points, heatmap images, bars.
MARKS_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return [];
  const drawn = p => (p.getAttribute('d') || '').replace(/[MZ0,.\\s]/g, '').length > 0;
  const figures = Array.from(panel.querySelectorAll('.jp-RenderedPlotly, .js-plotly-plot'))
    .filter(el => !el.parentElement.closest('.jp-RenderedPlotly, .js-plotly-plot'));
  return figures.map(el => {
    const q = s => Array.from(el.querySelectorAll(s));
    const lines = q('path.js-line').filter(drawn).length;
    const points = q('path.point').filter(drawn).length;
    const images = q('.hm image, image.hm, .heatmaplayer image').length;
    const bars = q('.bars .point path').filter(drawn).length;
    const img = el.querySelector('img.plot-img');
    const png = !!(img && img.complete && img.naturalWidth > 0 && img.style.display !== 'none');
    const t = el.querySelector('.gtitle');
    return {title: t ? t.textContent : '', png, lines, points, images, bars, marks: lines + points + images + bars};
  });
}"""

# the notebook's own outputs (as saved): plotly bundles (whether each has data to draw) and the widgets shown
OUTPUTS_JS = f"""() => {{
  const cells = {CURRENT}.content.model.cells, figures = [], widgets = [];
  const filled = v => v && ((Array.isArray(v) && v.length > 0) || (v.bdata && v.bdata.length > 0));
  for (let i = 0; i < cells.length; i++) {{
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    for (const o of c.outputs.toJSON()) {{
      const fig = o.data && o.data['{PLOTLY}'], view = o.data && o.data['{WIDGET}'];
      if (fig) figures.push((fig.data || []).some(t => ['x', 'y', 'z', 'r', 'values'].some(k => filled(t[k]))));
      if (view) widgets.push(view.model_id);
    }}
  }}
  return {{figures, widgets}};
}}"""

# The figures inside the widgets shown (``ROOTS``: their model ids), from the kernel: plotly FigureWidgets, and
# plotly bundles in ipywidgets Output areas (whose outputs the front end keeps in step), through boxes and
# nested outputs; for each, whether it has data to draw.
KERNEL_CENSUS = """
def _wb_census(roots):
    import json
    import ipywidgets
    try:
        from plotly.graph_objects import FigureWidget
    except ImportError:
        FigureWidget = ()
    shown = getattr(ipywidgets.widgets.widget, "_instances", {})

    def filled(v):
        if isinstance(v, dict):
            return bool(v.get("bdata"))
        try:
            return v is not None and len(v) > 0
        except TypeError:
            return False

    def has_data(traces):
        return any(filled(t.get(k)) for t in traces for k in ("x", "y", "z", "r", "values"))

    found, seen = [], set()

    def walk(w):
        if w is None or w.model_id in seen:
            return
        seen.add(w.model_id)
        if FigureWidget and isinstance(w, FigureWidget):
            found.append(has_data([t.to_plotly_json() for t in w.data]))
        for child in getattr(w, "children", ()) or ():
            walk(child)
        for o in getattr(w, "outputs", ()) if isinstance(w, ipywidgets.Output) else ():
            data = o.get("data") or {}
            if "application/vnd.plotly.v1+json" in data:
                found.append(has_data(data["application/vnd.plotly.v1+json"].get("data") or []))
            view = data.get("application/vnd.jupyter.widget-view+json")
            if view:
                walk(shown.get(view.get("model_id")))

    for model_id in roots:
        walk(shown.get(model_id))
    print(json.dumps(found))


_wb_census(ROOTS)
del _wb_census
"""

EXECUTE_JS = f"""async code => {{
  const k = {KERNEL};
  const future = k.requestExecute({{code, silent: false, store_history: false}});
  let out = '';
  future.onIOPub = m => {{ if (m.header.msg_type === 'stream') out += m.content.text;
                          if (m.header.msg_type === 'error') out += m.content.ename + ': ' + m.content.evalue; }};
  await future.done;
  return out;
}}"""


def kernel_print(page: Page, code: str) -> str:
    """Run ``code`` in the open notebook's kernel (outside any cell) and return what it printed."""
    return page.evaluate(EXECUTE_JS, code)


def open_notebook(page: Page, url: str, notebook: str) -> None:
    """Open ``notebook`` in a fresh workspace and wait for its cells and an idle kernel."""
    page.goto(f"{url}/lab/tree/{notebook}?reset")
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell", timeout=120_000)
    wait_idle(page, 180)


def wait_idle(page: Page, timeout: float) -> None:
    """The kernel is idle and no cell is queued or running (no ``[*]``)."""
    page.wait_for_function(
        f"() => {{ const k = {KERNEL}; if (!k || k.status !== 'idle') return false;"
        f" const cells = {CURRENT}.content.model.cells;"
        " for (let i = 0; i < cells.length; i++) { const c = cells.get(i);"
        "   if (c.type === 'code' && c.executionState === 'running') return false; }"
        " return !document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt')"
        "   || !Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt'))"
        "        .some(p => p.textContent.includes('*')); }", timeout=timeout * 1000, polling=500)


def run_all(page: Page, timeout: float) -> float:
    """Run All as the menu does; seconds until every cell has run and the kernel is idle again."""
    t0 = time.time()
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_timeout(1000)
    wait_idle(page, timeout)
    return time.time() - t0


# Notebooks whose Run All leaves work in the background, and what a teacher then does: press this button (None:
# the notebook started the work itself), wait for a status line that says it is done, then run again each cell
# that asked for it ("run this cell again") and the cells below it.
FOLLOW_UP: dict[str, str | None] = {"04_evolutionary_search": None, "05_progressive_extension": "Launch"}
DONE = re.compile(r"^\s*done(:| in )")
AGAIN = "run this cell again"


def follow_up(page: Page, press: str | None, timeout: float) -> float:
    """Do what the notebook asks for after Run All (see FOLLOW_UP); the seconds it took."""
    t0 = time.time()
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    if press:
        notebook.locator("button", has_text=re.compile(rf"^\s*{press}\s*$")).first.click()
    notebook.locator(".widget-html", has_text=DONE).first.wait_for(timeout=timeout * 1000)
    cells = page.evaluate(f"""() => {{ const cells = {CURRENT}.content.model.cells, found = [];
      for (let i = 0; i < cells.length; i++) {{ const c = cells.get(i);
        if (c.type === 'code' && JSON.stringify(c.outputs.toJSON()).includes('{AGAIN}')) found.push(i); }}
      return found; }}""")
    if cells:  # that cell and every one below it (later cells may depend on it)
        page.evaluate(f"() => {{ {CURRENT}.content.activeCellIndex = {cells[0]}; }}")
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-below'); }")
        page.wait_for_timeout(1000)
        wait_idle(page, timeout)
    return time.time() - t0


def broken_widgets(page: Page) -> list[str]:
    """Texts on the page that say a widget or figure could not be shown."""
    text = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").inner_text()
    return [b for b in BROKEN if b in text]


def census(page: Page) -> dict[str, Any]:
    """Figures expected (those whose data, in the notebook or the kernel, is not empty) and figures drawn (plotly
    graphs on the page with plotted marks)."""
    outputs = page.evaluate(OUTPUTS_JS)
    code = KERNEL_CENSUS.replace("ROOTS", json.dumps(outputs["widgets"]))
    in_widgets = json.loads(kernel_print(page, code).strip().splitlines()[-1])
    graphs = page.evaluate(MARKS_JS)
    sources = outputs["figures"] + in_widgets
    return {"expected": sum(sources), "figures": len(sources), "graphs": len(graphs),
            "png": sum(g["png"] for g in graphs), "drawn": sum(g["marks"] > 0 for g in graphs),
            "blank": [g["title"] for g in graphs if not g["marks"]], "marks": [g["marks"] for g in graphs]}


def settle(page: Page, timeout: float) -> dict[str, Any]:
    """Look at every figure as a reader does (scroll to it, move the pointer over it, which turns a PNG into the
    plotly graph) until every expected figure is drawn or time is up; the last census."""
    t0, shown_as_png = time.time(), None
    while True:
        seen = census(page)
        shown_as_png = seen["png"] if shown_as_png is None else shown_as_png  # before any pointer moved
        if seen["drawn"] >= seen["expected"] or time.time() - t0 > timeout:
            return {**seen, "png": shown_as_png}  # images still decoding then are not counted
        for img in page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedPlotly img.plot-img").all():
            try:  # a real pointer move; the graph it brings covers the image, which is then hidden
                img.hover(force=True, timeout=5_000)
            except PlaywrightError:
                pass
        for g in page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot").all():
            g.scroll_into_view_if_needed()
        page.wait_for_timeout(1000)


README_NOTEBOOK_SHOTS = REPO / "docs" / "screenshots"
SHOT_BYTES = 300_000


def notebook_shot(page: Page, folder: Path, name: str) -> Path:
    """Screenshot the open notebook from its first figure (or first output) down, the side bar closed; with
    ``WORKBENCH_README_SHOTS=1`` (``make screenshots``) also a small copy in docs/screenshots/ (under 300 KB)."""
    page.evaluate("() => { const w = window.jupyterapp.shell; if (!w.leftCollapsed) w.collapseLeft(); }")
    page.evaluate("""() => {
      const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
      const first = panel.querySelector('.js-plotly-plot') || panel.querySelector('.jp-OutputArea-output');
      const cell = first && first.closest('.jp-Cell');
      const prev = cell && cell.previousElementSibling;
      (prev || cell || panel).scrollIntoView({block: 'start'});
    }""")
    page.wait_for_timeout(1500)
    path = folder / f"notebook-{name}.png"
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").screenshot(path=str(path))
    if os.environ.get("WORKBENCH_README_SHOTS") == "1":
        readme_copy(path, README_NOTEBOOK_SHOTS / f"{name}.png")
    return path


def readme_copy(path: Path, target: Path) -> None:
    """Half size, a 128-colour palette; fewer colours and a smaller size until it is under SHOT_BYTES."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    for scale, colors in ((0.5, 128), (0.5, 64), (0.4, 64), (0.33, 48)):
        small = rgb.resize((int(rgb.width * scale), int(rgb.height * scale)), Image.LANCZOS)
        small.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
        if target.stat().st_size < SHOT_BYTES:
            return
    raise AssertionError(f"{target} is {target.stat().st_size} bytes even at a third of the size")
