"""The frequency explorer: sliders for the RoPE geometry and every method's parameters, four live plots.

    from widgets.frequency_explorer import FrequencyExplorer
    FrequencyExplorer.from_model("smollm2")     # or FrequencyExplorer(head_dim=64, rope_theta=1e5, ...)
"""

from __future__ import annotations

import html
import json
import math
from contextlib import contextmanager
from typing import Any

import ipywidgets as W
import numpy as np

from workbench.doctor import doctor
from workbench.hf import NotExpressibleError, load_config_dict, spec_from_hf, to_hf
from workbench.rope import (
    Control,
    RopeSpec,
    SpecError,
    available_methods,
    critical_dimension,
    get_method,
    methods_with,
)

from .figures import (
    attention_figure,
    factor_figure,
    method_specs,
    ood_figure,
    wavelength_figure,
)
from .panel import FigureOutput, Panel

LENGTHS = [2**k for k in range(6, 21)]  # 64 .. 1M tokens
KNOTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # positions of the curve's control points, as a fraction of the pairs
FIGURE_SIZE = dict(width=500, height=330)


def knot_curve(values: list[float], n_pairs: int) -> tuple[float, ...]:
    """Per-pair factors through control points at KNOTS, linear in between, made monotone, on a 0.01 grid."""
    xs = [f * (n_pairs - 1) for f in KNOTS]
    curve = np.interp(np.arange(n_pairs), xs, values)
    curve = np.maximum.accumulate(np.maximum(curve, 1.0))
    return tuple(round(float(v), 2) for v in curve)


def declared_controls() -> dict[str, Control]:
    """Every registered method's explorer controls by parameter name (the first declaration of a name wins), in
    teaching order: the explorer builds one widget for each and shows a method's own."""
    out: dict[str, Control] = {}
    for name in available_methods():
        for c in get_method(name).spec_cls.explorer_controls:
            out.setdefault(c.name, c)
    return out


def control_widget(c: Control, n_pairs: int) -> W.Widget | None:
    """The widget of one control (None for the factor curve: the knot sliders draw it)."""
    label = c.label or c.name
    # a slider sends its value when let go (or per key press), not on every pixel of a drag: each value redraws
    # four figures; a fresh Layout each: a shared one would hide all at once
    common = dict(description=label, continuous_update=False, style={"description_width": "100px"},
                  layout=W.Layout(width="310px"))
    if c.kind == "float":
        return W.FloatSlider(value=c.default, min=c.low, max=c.high, step=c.step, **common)
    if c.kind == "int":
        return W.IntSlider(value=c.default, min=int(c.low), max=int(c.high), step=int(c.step), **common)
    if c.kind == "pair":
        return W.IntSlider(value=c.default, min=int(c.low), max=max(n_pairs - 1, int(c.low)), **common)
    if c.kind == "choice":
        return W.ToggleButtons(options=list(c.options), value=c.default, description=label,
                               style={"description_width": "90px", "button_width": "72px"})
    return None


def _nearest(options: list[int], value: int) -> int:
    return min(options, key=lambda o: abs(math.log(o) - math.log(max(value, 1))))


class FrequencyExplorer(Panel):
    """Sliders -> one RopeSpec per update -> four plots redrawn from it (plus the transformers export)."""

    def __init__(self, head_dim: int = 64, rope_theta: float = 1e5, original_max_position_embeddings: int = 8192,
                 target_length: int = 16384, method: str = "longrope", config: Any = None,
                 measure_model: str | None = "teaching") -> None:
        self._make_sliders(head_dim, rope_theta, original_max_position_embeddings, target_length, method)
        self._make_buttons()
        super().__init__()  # the status line
        self.note = W.HTML(layout=W.Layout(width="310px"))  # the method's explorer_note
        self.export = W.HTML(layout=W.Layout(width="100%"))
        self.export_json = W.Textarea(layout=W.Layout(width="100%", height="90px"), disabled=False,
                                      description="copy:", style={"description_width": "50px"})
        self.loaded_factors: tuple[float, ...] | None = None
        self._knot_s = target_length / max(1, original_max_position_embeddings)
        self._start: dict[str, Any] = dict(head_dim=head_dim, rope_theta=float(rope_theta),
                                           original_max_position_embeddings=original_max_position_embeddings,
                                           target_length=target_length, method=method)
        self.spec: RopeSpec | None = None
        self.updates = 0
        self._muted = False

        self._set_default_knots()
        first = self._build_spec()
        self.figures = {name: FigureOutput("drawing ...", **FIGURE_SIZE)
                        for name in ("wavelength", "factors", "ood", "attention")}
        self.spec = first
        self._draw(first)
        self._render_export(first)

        self._wire()
        self._visibility()
        from .measure import MeasurePanel

        self.measure = MeasurePanel(lambda: self.spec, model=measure_model) if measure_model else None
        if config is not None:
            self.load_config(config)

    def _make_sliders(self, head_dim: int, rope_theta: float, original: int, target_length: int,
                      method: str) -> None:
        def slider_args() -> dict[str, Any]:  # a fresh Layout each: a shared one would hide all at once
            # a slider sends its value when let go (or per key press), not on every pixel of a drag: each value
            # redraws four figures
            return dict(continuous_update=False, style={"description_width": "100px"}, layout=W.Layout(width="310px"))

        self.base = W.FloatLogSlider(value=rope_theta, base=10, min=2, max=7.5, step=0.05, description="base b",
                                     readout=False, **slider_args())
        # the slider moves on a log grid; the exact value lives here (typed or loaded values are never rounded)
        self.base_text = W.FloatText(value=rope_theta, description="b exactly", style={"description_width": "100px"},
                                     layout=W.Layout(width="240px"))
        self._theta = float(rope_theta)
        self.head_dim = W.Dropdown(options=[32, 48, 64, 80, 96, 128, 256], value=head_dim, description="head_dim",
                                   style={"description_width": "90px"}, layout=W.Layout(width="200px"))
        self.original = W.SelectionSlider(options=LENGTHS, value=_nearest(LENGTHS, original),
                                          description="L0", **slider_args())
        self.target = W.SelectionSlider(options=LENGTHS, value=_nearest(LENGTHS, target_length),
                                        description="target L", **slider_args())
        self.method = W.Dropdown(options=available_methods(), value=method, description="method",
                                 style={"description_width": "90px"}, layout=W.Layout(width="250px"))
        self.declared = declared_controls()
        made = {name: control_widget(c, head_dim // 2) for name, c in self.declared.items()}
        self.controls: dict[str, W.Widget] = {name: w for name, w in made.items() if w is not None}
        self.knots = [W.FloatSlider(value=1.0, min=1.0, max=8.0, step=0.01, description=f"{int(f * 100)}%",
                                    continuous_update=False, orientation="vertical",
                                    layout=W.Layout(width="56px", height="150px")) for f in KNOTS]

    def _make_buttons(self) -> None:
        self.config_path = W.Text(placeholder="teaching, smollm2, a model folder or config.json",
                                  layout=W.Layout(width="310px"))
        self.load_button = W.Button(description="Load", icon="folder-open", layout=W.Layout(width="120px"))
        self.reset_button = W.Button(description="Reset", icon="undo", layout=W.Layout(width="120px"),
                                     tooltip="back to the loaded model's settings (or the starting ones)")

    def _wire(self) -> None:
        """Every control observed: a change redraws from one new spec."""
        for w in (self.head_dim, self.original, self.target, self.method, *self.controls.values()):
            w.observe(self._on_change, names="value")
        self.base.observe(self._on_base_slider, names="value")
        self.base_text.observe(self._on_base_text, names="value")
        for k in self.knots:
            k.observe(self._on_knot, names="value")
        self.load_button.on_click(self._on_load)
        self.reset_button.on_click(self._on_reset)

    # ---- construction helpers ----------------------------------------------------------------
    @classmethod
    def from_model(cls, source: Any, target_length: int | None = None, method: str = "longrope",
                   measure_model: str | None = "teaching") -> FrequencyExplorer:
        """An explorer opened on a model's (or config's) geometry."""
        ex = cls(method=method, measure_model=measure_model)
        ex.load_config(source)
        if target_length:
            ex.target.value = _nearest(LENGTHS, target_length)
        return ex

    @property
    def widget(self) -> W.Widget:
        """Controls in a row of columns on top, the four plots in a 2 x 2 grid below, the export last."""
        column = dict(layout=W.Layout(width="330px", margin="0 12px 0 0"))
        geometry = W.VBox([W.HTML("<b>Geometry</b>"), self.base, self.base_text, self.head_dim, self.original,
                           self.target, W.HTML("<b>Load from a model</b>"), self.config_path,
                           W.HBox([self.load_button, self.reset_button])], **column)
        method = W.VBox([W.HTML("<b>Method</b>"), self.method, *self.controls.values(), self.note], **column)
        self._curve_box = W.VBox([W.HTML("<b>LongRoPE factor curve</b><br>λ at 0/25/50/75/100 % of the pairs"),
                                  W.HBox(self.knots)], layout=W.Layout(width="320px"))
        f = self.figures
        plots = W.VBox([W.HBox([f["wavelength"].widget, f["factors"].widget]),
                        W.HBox([f["ood"].widget, f["attention"].widget])])
        self._visibility()
        parts = [W.HBox([geometry, method, self._curve_box]), self.status, plots, self.export, self.export_json]
        if self.measure is not None:
            parts.append(self.measure.widget)
        return W.VBox(parts)

    # ---- state -> spec ------------------------------------------------------------------------
    def _geometry(self) -> dict[str, Any]:
        return dict(head_dim=int(self.head_dim.value), rope_theta=self._theta,
                    original_max_position_embeddings=int(self.original.value), target_length=int(self.target.value))

    def _curve(self) -> tuple[float, ...]:
        D = int(self.head_dim.value) // 2
        if self.loaded_factors is not None and len(self.loaded_factors) == D:
            return self.loaded_factors
        return knot_curve([k.value for k in self.knots], D)

    def _build_spec(self) -> RopeSpec:
        values = {name: int(w.value) if self.declared[name].kind in ("int", "pair") else w.value
                  for name, w in self.controls.items()}
        values.update(long_factor=self._curve(), enforce_monotone=self.loaded_factors is None)
        return get_method(self.method.value).spec_cls.from_explorer(self._geometry(), values)

    def _compare_specs(self, spec: RopeSpec) -> dict[str, RopeSpec]:
        others = method_specs(spec, [m for m in methods_with("compare") if m != spec.method])
        return {**others, spec.method: spec}

    # ---- events -------------------------------------------------------------------------------
    def _set_theta(self, theta: float) -> None:
        """The exact base: the text box shows it, the slider moves to the nearest point of its grid."""
        self._theta = float(theta)
        with self._hold():
            self.base_text.value = self._theta
            self.base.value = self._theta

    def _on_base_slider(self, change: dict) -> None:
        if self._muted:
            return
        new = float(change["new"])
        # The browser snaps an exact base (500) to the slider's log grid (10**2.7 = 501.19) and sends that back
        # after the kernel set it: a value in the same grid cell as the exact base is that echo, not a user move.
        if new > 0 and abs(math.log10(new) - math.log10(self._theta)) < self.base.step / 2 - 1e-9:
            return
        self._theta = new
        with self._hold():
            self.base_text.value = self._theta
        self._on_change({"owner": self.base})

    def _on_base_text(self, change: dict) -> None:
        if self._muted:
            return
        value = change["new"]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 1):
            self.status.value = ("<span style='color:#b2182b'>⚠ the base must be a number above 1 "
                                 f"(got {html.escape(str(value))})</span>")
            return
        self._set_theta(value)
        self._on_change({"owner": self.base})

    def _on_knot(self, change: dict) -> None:
        if self._muted:
            return
        self.loaded_factors = None  # the user is shaping the curve now
        self._on_change(change)

    def _on_change(self, change: dict | None = None) -> None:
        if self._muted:
            return
        if change is not None and change.get("owner") is self.original and self.target.value < self.original.value:
            self.target.value = self.original.value
            return  # the target change triggers the update
        if change is not None and change.get("owner") in (self.head_dim, self.base, self.original):
            self._sync_critical()
        if change is not None and change.get("owner") in (self.original, self.target):
            self._follow_s()
        self._visibility()
        try:
            spec = self._build_spec()
        except SpecError as e:
            # no plot may show settings other than the sliders': each says why it is not drawn
            self.spec = None
            self.say(str(e), error=True)
            for f in self.figures.values():
                f.message(f"not drawn: {e}")
            return
        self.spec = spec
        self.status.value = f"<span style='color:#555'>{html.escape(self._summary(spec))}</span>"
        self._draw(spec)
        self._render_export(spec)
        self.updates += 1

    def _draw(self, spec: RopeSpec) -> None:
        """Every plot (and the method's note) from the one spec built for this update."""
        note = spec.explorer_note()
        self.note.value = f"<small>{html.escape(note)}</small>" if note else ""
        factors = factor_figure(self._compare_specs(spec), spec.method)
        if note:
            factors.add_annotation(x=0, y=1, xref="paper", yref="paper", xanchor="left", yanchor="top",
                                   text=note.split(":")[0], showarrow=False, font=dict(size=10, color="#555"))
        self.figures["wavelength"].show(wavelength_figure(spec))
        self.figures["factors"].show(factors)
        self.figures["ood"].show(ood_figure(spec))
        self.figures["attention"].show(attention_figure(spec))

    @staticmethod
    def _summary(spec: RopeSpec) -> str:
        f = spec.frequencies()
        return (f"{spec.method}: L0 {spec.original_max_position_embeddings} → {spec.target_length} tokens "
                f"(s = {spec.factor:g}), attention factor {f.attention_factor:.3f}")

    def _render_export(self, spec: RopeSpec) -> None:
        try:
            exp = to_hf(spec)
            body = json.dumps(exp.rope_parameters, default=float)
            if len(body) > 600:
                body = body[:600] + " … (the whole JSON is in the box below)"
            notes = "".join(f"<br><i>note:</i> {html.escape(n)}" for n in exp.notes)
            self.export.value = (f"<b>transformers rope_parameters</b> (max_position_embeddings="
                                 f"{exp.config_updates['max_position_embeddings']}): <code>{html.escape(body)}</code>{notes}")
            self.export_json.value = json.dumps({"rope_parameters": exp.rope_parameters, **exp.config_updates},
                                                indent=1, default=float)
        except NotExpressibleError as e:
            self.export.value = f"<b>transformers export:</b> <span style='color:#b2182b'>{html.escape(str(e))}</span>"
            self.export_json.value = ""

    def _visibility(self) -> None:
        used = {c.name: c for c in get_method(self.method.value).spec_cls.explorer_controls}
        for name, w in self.controls.items():
            when = used[name].shown_when if name in used else None
            visible = name in used and (when is None or self.controls[when[0]].value == when[1])
            w.layout.display = None if visible else "none"
        box = getattr(self, "_curve_box", None)
        if box is not None:
            box.layout.display = None if any(c.kind == "curve" for c in used.values()) else "none"

    def _sync_critical(self) -> None:
        """Pair-index controls follow the geometry: up to the last pair but one, at the critical dimension."""
        D = int(self.head_dim.value) // 2
        for name, w in self.controls.items():
            if self.declared[name].kind == "pair":
                w.max = max(D - 1, int(self.declared[name].low))
                w.value = critical_dimension(int(self.head_dim.value), self._theta, int(self.original.value))

    def _knot_top(self) -> float:
        return max(2.0, 2 * self.target.value / self.original.value + 1)

    def _follow_s(self) -> None:
        """A new s = target / L0 stretches every knot's factor above 1 by (1.5 s_new - 1) / (1.5 s_old - 1): the
        curve keeps its shape and the starting curve (1 -> 1.5 s) stays the starting curve of the new s."""
        s_new = self.target.value / self.original.value
        top = self._knot_top()
        ratio = (1.5 * s_new - 1) / (1.5 * self._knot_s - 1) if self._knot_s > 1 else None
        with self._hold():
            for k, f in zip(self.knots, KNOTS, strict=True):
                k.max = max(k.max, top)
                k.value = round(min(top, 1 + (k.value - 1) * ratio), 2) if ratio is not None else \
                    self._default_knot(f, s_new, top)
                k.max = top
        self._knot_s = s_new

    @staticmethod
    def _default_knot(f: float, s: float, top: float) -> float:
        """The starting curve: 1 up to 30 % of the pairs, then a straight rise to 1.5 s."""
        return round(min(top, 1.0 + max(0.0, (f - 0.3) / 0.7) * (1.5 * s - 1.0)), 2)

    def _set_default_knots(self) -> None:
        s = self.target.value / self.original.value
        top = self._knot_top()
        for k, f in zip(self.knots, KNOTS, strict=True):
            k.max = max(k.max, top)
            k.value = self._default_knot(f, s, top)
            k.max = top
        self._knot_s = s
        self._sync_critical()

    def _on_load(self, _button: Any) -> None:
        path = self.config_path.value.strip()
        if not path:
            self.status.value = "<span style='color:#b2182b'>⚠ type smollm2, a model folder or a config.json path</span>"
            return
        try:
            self.load_config(path)
        except Exception as e:  # noqa: BLE001 - shown to the user, not swallowed
            self.status.value = f"<span style='color:#b2182b'>⚠ {html.escape(str(e))}</span>"

    def load_config(self, source: Any) -> RopeSpec:
        """Set the sliders from a model config: a model name (teaching, teaching-ci, smollm2, tiny-random), a
        folder or config.json path, a dict, a transformers config or a model. Only the config is read."""
        if isinstance(source, str):
            from workbench.models import load_model_config

            source = load_model_config(source)
        cfg = load_config_dict(source)
        spec = spec_from_hf(cfg)
        report = doctor(cfg)
        with self._hold():
            if spec.head_dim not in self.head_dim.options:
                self.head_dim.options = sorted({*self.head_dim.options, spec.head_dim})
            self.head_dim.value = spec.head_dim
            self._set_theta(spec.rope_theta)
            self.original.value = _nearest(LENGTHS, spec.original_max_position_embeddings)
            self.target.value = max(_nearest(LENGTHS, spec.target_length), self.original.value * 2)
            self.loaded_factors = None
            values = spec.explorer_values()  # None: the method keeps the explorer's own method
            if values is not None:
                self.method.value = spec.method
                self.loaded_factors = values.pop("long_factor", None)
                for name, value in values.items():
                    self.controls[name].value = value
            self._set_default_knots()
        self._start = dict(config=cfg, method=self.method.value)
        self._on_change()
        findings = "".join(f"<br>[{f.level}] {html.escape(f.message)}" for f in report.findings)
        rotary, pairing = report.numbers.get("head_dim (rotary)"), report.numbers.get("rotary pairing")
        layout = f" — rotary: {html.escape(str(rotary))}" if rotary else ""
        layout += f", paired as {html.escape(str(pairing))}" if rotary and pairing else ""
        self.status.value = f"<b>loaded:</b> {html.escape(report.summary)}{layout}{findings}"
        return spec

    def _on_reset(self, _button: Any = None) -> None:
        """Back to the loaded model's settings, or to the ones the explorer was opened with."""
        if "config" in self._start:
            with self._hold():
                self.method.value = self._start["method"]
            self.load_config(self._start["config"])
            return
        st = self._start
        with self._hold():
            self.head_dim.value = st["head_dim"]
            self._set_theta(st["rope_theta"])
            self.original.value = _nearest(LENGTHS, st["original_max_position_embeddings"])
            self.target.value = _nearest(LENGTHS, st["target_length"])
            self.method.value = st["method"]
            for name, w in self.controls.items():
                if self.declared[name].kind != "pair":  # pair indices follow the geometry
                    w.value = self.declared[name].default
            self.loaded_factors = None
            self._set_default_knots()
        self._on_change()
        self.status.value = "<span style='color:#555'>reset to the starting settings</span>"

    @contextmanager
    def _hold(self):
        """Suspend updates while several sliders change together (nested holds keep the outer one)."""
        was, self._muted = self._muted, True
        try:
            yield
        finally:
            self._muted = was
