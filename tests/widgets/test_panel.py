"""What every panel shares: a figure output that is either drawn or says why not, the model picker, and one
background job at a time with done / error / stop shown in the status line."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("ipywidgets")

import ipywidgets as W  # noqa: E402
import plotly.graph_objects as go  # noqa: E402

from widgets.display import PLOTLY_MIME  # noqa: E402
from widgets.panel import MODELS, FigureOutput, Panel, model_picker  # noqa: E402


def test_figure_output_shows_a_message_then_a_figure_as_data():
    out = FigureOutput("press Go", width=400, height=300)
    assert out.traces == [] and len(out.widget.outputs) == 1
    assert "press Go" in out.widget.outputs[0]["data"]["text/html"]
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], name="a"), layout={"title": "Hello"})
    done = threading.Thread(target=out.show, args=(fig,))  # panels draw from their job's thread
    done.start()
    done.join()
    (output,) = out.widget.outputs
    assert output["output_type"] == "display_data" and set(output["data"]) == {PLOTLY_MIME, "text/plain"}
    assert [t["name"] for t in out.traces] == ["a"] and out.traces[0]["y"] == [3, 1, 2] and out.title == "Hello"
    assert output["data"][PLOTLY_MIME]["layout"]["width"] == 400
    out.message("stopped")
    assert out.traces == [] and out.figure is None


def test_model_picker_adds_a_folder_given():
    assert model_picker("teaching").options == tuple(MODELS)
    picker = model_picker("/some/model/folder")
    assert picker.value == "/some/model/folder" and len(picker.options) == len(MODELS) + 1


class Toy(Panel):
    def __init__(self):
        super().__init__()
        self.go, self.stop_button = W.Button(), W.Button(disabled=True)
        self.buttons = [self.go]

    @property
    def widget(self):
        return W.VBox([self.go, self.stop_button, self.status])


def test_job_lifecycle_done_error_and_stop():
    p = Toy()
    job = p.start_job(lambda sink: 42, lambda v: p.say(f"got {v}"), wait=True)
    assert job.result == 42 and p.status.value == "got 42" and not p.go.disabled and p.stop_button.disabled

    def fail(sink):
        raise ValueError("bad <input>")

    p.start_job(fail, lambda v: None, wait=True)
    assert "ValueError: bad &lt;input&gt;" in p.status.value and "b2182b" in p.status.value and not p.go.disabled

    started = threading.Event()

    def slow(sink):
        started.set()
        while True:
            sink(None)  # a stop raises here
            time.sleep(0.01)

    job = p.start_job(slow, lambda v: None)
    started.wait(5)
    assert p.running and p.go.disabled and not p.stop_button.disabled
    p.stop()
    job.join(5)
    assert job.cancelled and p.status.value == "stopped" and not p.go.disabled and p.stop_button.disabled


def test_a_model_that_is_not_there_is_refused_naming_what_is_accepted(tmp_path):
    p = Toy()
    p.start_job(lambda sink: p.load(str(tmp_path / "no-such-model")), lambda v: None, wait=True)
    for name in ("teaching", "teaching-ci", "smollm2", "folder"):
        assert name in p.status.value, p.status.value
