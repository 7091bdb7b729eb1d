"""The proof that a method's knowledge lives in one place: a method defined here, in this file alone,
reaches every part of the workbench once it is registered: the method list, the frequency explorer (a slider for
its own parameter, its colour in the plots), the evaluation dashboard, the search's seeds,
``workbench rope show`` and ``rope export``, the transformers export and import, and the doctor.

The registration is scoped to the ``toy`` fixture, so no other test sees the method.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from workbench.rope import (
    Control,
    Look,
    RopeFrequencies,
    RopeSpec,
    YarnSpec,
    available_methods,
    make_spec,
    register,
    unregister,
)
from workbench.rope.base import fail


@dataclass(frozen=True, kw_only=True)
class ToySpec(RopeSpec):
    """A toy rescaling: the ``pairs`` slowest pairs divided by a constant ``scale``, the others kept."""

    method: ClassVar[str] = "toy"
    words: ClassVar[str] = "toy scaling (the slowest pairs divided by a constant)"
    hf_rope_types: ClassVar[tuple[str, ...]] = ("toy",)
    hf_keys: ClassVar[frozenset[str]] = frozenset({"factor", "original_max_position_embeddings", "scale", "pairs"})
    label: ClassVar[str] = "Toy"
    look: ClassVar[Look] = Look("#17becf", "dot", 2.5, "x")
    teaching_rank: ClassVar[int] = 50  # after the known methods
    roles: ClassVar[frozenset[str]] = frozenset({"compare", "evaluate", "seed"})
    explorer_controls: ClassVar[tuple[Control, ...]] = (Control("scale", "toy scale", 2.0, 1.0, 8.0, 0.5),)
    scale: float = 2.0
    pairs: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.pairs <= self.n_pairs:
            fail("pairs", self.pairs, f"an integer in [1, {self.n_pairs}]")


def compute_toy(spec: ToySpec, seq_len: int | None = None) -> RopeFrequencies:
    inv_freq = spec.original_inv_freq()
    inv_freq[-spec.pairs:] /= spec.scale
    return RopeFrequencies(inv_freq, 1.0)


GEOMETRY = dict(head_dim=16, rope_theta=10000.0, original_max_position_embeddings=64)
BASE_CONFIG = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 64,
               "rope_theta": 10000.0}


@pytest.fixture
def toy():
    register(ToySpec, "toy: the slowest pairs divided by a constant")(compute_toy)
    try:
        yield make_spec("toy", **GEOMETRY, target_length=256, scale=3.0, pairs=3)
    finally:
        unregister("toy")


def test_the_toy_is_a_method(toy):
    from workbench.rope import methods_with

    assert "toy" in available_methods() and available_methods()[-1] == "toy"  # after the known ones
    assert methods_with("seed")[-1] == methods_with("evaluate")[-1] == methods_with("compare")[-1] == "toy"
    f = toy.frequencies()
    theta = toy.original_inv_freq()
    assert torch.equal(f.inv_freq[:5], theta[:5]) and torch.allclose(f.inv_freq[5:], theta[5:] / 3)


def test_the_explorer_lists_and_draws_it(toy):
    pytest.importorskip("ipywidgets")
    from widgets.frequency_explorer import FrequencyExplorer
    from workbench.rope import method_specs

    ex = FrequencyExplorer(head_dim=32, rope_theta=10000.0, original_max_position_embeddings=64, target_length=256,
                           method="yarn", measure_model=None)
    assert "toy" in ex.method.options
    assert isinstance(ex.spec, YarnSpec) and ex.controls["scale"].layout.display == "none"  # only the toy's
    ex.method.value = "toy"
    assert isinstance(ex.spec, ToySpec) and ex.spec.factor == 4.0 and ex.spec.scale == 2.0
    slider = ex.controls["scale"]
    assert slider.layout.display is None and slider.description == "toy scale" and (slider.min, slider.max) == (1, 8)
    assert all(ex.controls[name].layout.display == "none" for name in ("beta_fast", "n_hat", "critical_dim"))
    slider.value = 5.0  # the slider works: a new spec, new plots, a new export
    assert ex.spec.scale == 5.0 and '"scale": 5.0' in ex.export_json.value
    toy_curve = [t for t in ex.figures["factors"].traces if t["name"] == "toy"]
    assert toy_curve and toy_curve[0]["line"]["color"] == "#17becf" and toy_curve[0]["y"][-1] == pytest.approx(5.0)
    ex.method.value = "yarn"  # drawn beside the others too (its role "compare"), in its own colour
    assert [t["line"]["color"] for t in ex.figures["factors"].traces if t["name"] == "toy"] == ["#17becf"]
    assert isinstance(method_specs(toy, ["yarn", "toy"])["toy"], ToySpec)


def test_the_evaluation_dashboard_offers_it(toy):
    pytest.importorskip("ipywidgets")
    from widgets.eval_dashboard import EvalDashboard
    from widgets.figures import color_of, method_label

    dash = EvalDashboard(model="teaching-ci", multiples=(1,))
    assert dash.methods.options[-1] == "toy" and "toy" in dash.methods.value and "toy" in dash.needle_method.options
    assert color_of("toy s=4 (PPL 3.1)") == "#17becf" and method_label("toy") == "Toy"


def test_it_seeds_the_search(toy):
    from workbench.search import LongTarget, SearchConfig, seed_label

    cfg = SearchConfig(target_length=256)
    assert cfg.seed_methods == ("linear", "ntk", "yarn", "toy")
    seeds = dict(LongTarget(GEOMETRY, 256).seeds(cfg.seed_methods))
    assert seeds["toy"] == pytest.approx([1.0] * 6 + [2.0] * 2)  # its own defaults: the 2 slowest pairs / 2
    assert seed_label("toy") == "Toy seed" and seed_label("yarn") == "YaRN seed"


def test_rope_show_and_export_on_the_command_line(toy, tmp_path, capsys):
    from workbench.cli import main

    args = ["--method", "toy", "--head-dim", "16", "--rope-theta", "10000", "--original", "64", "--target", "256",
            "--param", "scale=3", "--param", "pairs=3"]
    assert main(["rope", "show", *args]) == 0
    out = capsys.readouterr().out
    assert out.startswith("toy (s=4, L0=64, L=256, scale=3, pairs=3)") and "critical dim" in out
    assert main(["rope", "show", *args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["spec"]["method"] == "toy" and data["pairs"][-1]["effective_factor"] == pytest.approx(3.0)

    base, out_path = tmp_path / "base.json", tmp_path / "config.json"
    base.write_text(json.dumps(BASE_CONFIG))
    assert main(["rope", "export", "--config", str(base), *args[:2], "--target", "256", "--param", "scale=3",
                 "--param", "pairs=3", "--out", str(out_path)]) == 0
    assert json.loads(out_path.read_text())["rope_parameters"]["rope_type"] == "toy"


def test_export_import_round_trip(toy):
    from workbench.hf import export_config, spec_from_hf, to_hf

    exp = to_hf(toy)
    assert exp.rope_parameters == {"rope_type": "toy", "factor": 4.0, "original_max_position_embeddings": 64,
                                   "scale": 3.0, "pairs": 3, "rope_theta": 10000.0}
    for layout in ("v5", "v4"):
        full, _ = export_config(toy, BASE_CONFIG, layout)
        back = spec_from_hf(full)
        assert back == toy
        assert torch.equal(back.frequencies().inv_freq, toy.frequencies().inv_freq)


def test_the_doctor_explains_it(toy):
    from workbench.doctor import doctor
    from workbench.hf import export_config

    full, _ = export_config(toy, BASE_CONFIG)
    report = doctor(full)
    assert report.summary.startswith("toy scaling (the slowest pairs divided by a constant): head_dim 16")
    assert report.numbers["rope_type"] == "toy" and report.numbers["target length L"] == 256
    messages = " | ".join(f.message for f in report.findings)
    assert "unknown key" not in messages and "is not one of" not in messages
    assert "stock transformers" in messages  # it has no rope_type "toy": the doctor says so
    assert report.llama_cpp is None and "no equivalent of toy" in report.llama_cpp_reason
    assert report.vllm is not None and '"rope_type": "toy"' in report.vllm


def test_registration_is_scoped():
    from workbench.search import SearchConfig

    assert "toy" not in available_methods() and "toy" not in SearchConfig(target_length=256).seed_methods
