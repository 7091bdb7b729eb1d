"""What a person does in JupyterLab, as Playwright calls: open a notebook, run all cells, find a widget by
its label, move a slider, pick from a dropdown, press a button; and what they see: a plotly graph's data."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page


def open_and_run(page: Page, url: str, notebook: str, ready: str, timeout: float = 300) -> Locator:
    """Open ``notebook``, wait for its kernel, run all cells; return the output area holding ``ready``
    (a CSS selector of what the widget renders) once it is visible."""
    # ?reset: a fresh workspace, so tabs another test left open are not restored behind this one
    page.goto(f"{url}/lab/tree/{notebook}?reset")
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
        " return k && k.status === 'idle'; }", timeout=120_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    widget = page.locator(".jp-OutputArea-output", has=page.locator(ready)).first
    widget.wait_for(state="visible", timeout=timeout * 1000)
    return widget


def errors(page: Page) -> list[str]:
    """Tracebacks shown in any output of the open notebook."""
    return page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] pre, "
                        ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").all_inner_texts()


def plot_data(graph: Locator) -> list[dict[str, Any]]:
    """The traces a rendered plotly graph shows now (name, and x / y / z as plain lists)."""
    return json.loads(graph.evaluate(
        "el => JSON.stringify((el.data || []).map(t => ({name: t.name || '', type: t.type || 'scatter',"
        " x: t.x ? Array.from(t.x) : null, y: t.y ? Array.from(t.y) : null,"
        " z: t.z ? Array.from(t.z, r => Array.from(r)) : null})))"))


def graph(area: Locator, title: str) -> Locator:
    """The plotly graph in ``area`` whose title contains ``title``."""
    return area.locator(".js-plotly-plot", has=area.page.locator(".gtitle", has_text=title)).first


def drawn(area: Locator, title: str, ready: Callable[[list[dict[str, Any]]], bool], what: str,
          timeout: float = 30) -> list[dict[str, Any]]:
    """The traces of the graph titled ``title`` once ``ready(traces)`` holds. A status line and a figure are
    separate outputs, and JupyterLab draws the figure a moment after its update arrives (longer on a busy
    machine): a test that saw the status line waits here for the figure it announced."""
    seen: list[dict[str, Any]] = []

    def check() -> bool:
        nonlocal seen
        seen = plot_data(graph(area, title)) if graph(area, title).count() else []
        return ready(seen)

    try:
        wait_until(check, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}; the graph shows {[(t['name'], len(t['y'] or [])) for t in seen]}") from None
    return seen


def labelled(area: Locator, kind: str, label: str) -> Locator:
    """The widget of ``kind`` (``slider``, ``dropdown``, ``text``, ...) whose description is ``label``."""
    return area.locator(f".widget-{kind}", has=area.page.locator(".widget-label", has_text=label)).first


def set_slider(area: Locator, label: str, value: float | str) -> None:
    """Type a value into a slider's readout, as a person does, and press Enter."""
    readout = labelled(area, "slider", label).locator(".widget-readout")
    readout.click()
    readout.press("Control+A")
    readout.type(str(value))
    readout.press("Enter")


def choose(area: Locator, label: str, option: str) -> None:
    labelled(area, "dropdown", label).locator("select").select_option(label=option)


def button(area: Locator, name: str) -> Locator:
    """The button whose text is ``name`` (its icon is CSS, not text)."""
    return area.locator("button", has_text=re.compile(rf"^\s*{re.escape(name)}\s*$")).first


def wait_until(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.25) -> None:
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def steady(count: Callable[[], int], quiet: float, timeout: float, what: str) -> int:
    """``count()`` once it has not changed for ``quiet`` seconds (a figure JupyterLab is still drawing after the
    status line that announced it); fails if it keeps changing for ``timeout`` seconds."""
    t0 = time.time()
    last, since = count(), time.time()
    while time.time() - since < quiet:
        if time.time() - t0 > timeout:
            raise AssertionError(f"{what} kept changing for {timeout:.0f} s (last {last})")
        time.sleep(0.25)
        now = count()
        if now != last:
            last, since = now, time.time()
    return last


README_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "images" / "widgets"


def shoot(area: Locator, folder: Path, name: str) -> Path:
    """Screenshot a widget into the test output folder; with ``WORKBENCH_README_SHOTS=1`` (``make screenshots``)
    also a small copy (70 % size, 96-colour palette) for the README."""
    path = folder / f"{name}.png"
    area.scroll_into_view_if_needed()
    area.screenshot(path=str(path))
    if os.environ.get("WORKBENCH_README_SHOTS") == "1":
        from PIL import Image

        README_SHOTS.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            small = im.convert("RGB").resize((int(im.width * 0.7), int(im.height * 0.7)), Image.LANCZOS)
            small.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(README_SHOTS / f"{name}.png", optimize=True)
    return path


def nudge_slider(area: Locator, label: str, key: str = "ArrowRight", times: int = 1) -> None:
    """Move a slider with the keyboard (focus its handle, press arrow keys) — works for selection sliders too."""
    handle = labelled(area, "slider", label).locator(".noUi-handle").first
    handle.focus()
    for _ in range(times):
        handle.press(key)


def readout(area: Locator, label: str) -> str:
    """What a slider shows as its value."""
    return labelled(area, "slider", label).locator(".widget-readout").inner_text().strip()


def type_into(area: Locator, kind: str, label: str, text: str) -> None:
    """Replace the text of a text box (``kind`` ``text``) and leave it with Tab, as a person does."""
    box = labelled(area, kind, label).locator("input, textarea").first
    box.fill(text)
    box.press("Tab")


def set_readout(area: Locator, label: str, value: int | float) -> None:
    """Set a numeric slider by typing into its readout; waits until it shows the value."""
    set_slider(area, label, value)
    wait_until(lambda: float(readout(area, label)) == float(value), 10, f"slider {label!r} to read {value}")


def points(area: Locator, title: str, trace: str | None = None) -> int:
    """How many points the graph titled ``title`` shows (in the trace named ``trace``, or in all); 0 while the
    panel shows a message instead of that graph."""
    if not graph(area, title).count():
        return 0
    data = plot_data(graph(area, title))
    return sum(len(t["y"] or []) for t in data if trace is None or t["name"] == trace)
