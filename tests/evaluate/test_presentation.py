"""Every evaluation result presents itself: one summary line, its JSON round trip, its figures; and the
evaluation of several methods (notebook 07's results.json) built from them."""

from __future__ import annotations

import json

import pytest

from workbench.entropy import EntropyResult
from workbench.evaluate import (
    Evaluation,
    NeedleGridResult,
    NeedlePerplexityResult,
    PasskeyResult,
    PerplexityResult,
    RegressionResult,
    regression_table,
)


def _ppl(label: str, length: int, ppl: float) -> PerplexityResult:
    return PerplexityResult(label, length, "truncated", 2, 1.0, ppl, [ppl, ppl], ["a", "b"], [False, False], 64,
                            [1.0 + 0.5 * k for k in range(length // 64)], 1.25, length * 2, "fp32")


RESULTS = [
    _ppl("yarn", 256, 12.5),
    RegressionResult(256, "original", "yarn", 10.0, 10.4),
    PasskeyResult("yarn", [256, 512], [1.0, 0.5], [{}] * 4, 2.0),
    NeedlePerplexityResult("yarn", 512, 3.2, 1.16, [1.1, 1.2], 2, 1.0),
    NeedleGridResult("yarn", [0.0, 1.0], [256, 512], [[1.0, 0.5], [1.0, 0.0]], [[0.1, 0.2], [0.1, 0.9]], [], 3.0),
    EntropyResult("yarn", 256, [0], 2, 128, [[[1.0, 2.0], [1.5, 2.5]]], [[[0.5, 0.4], [0.5, 0.3]]], [128, 128]),
]


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_a_result_reads_back_from_its_json_and_says_itself_in_one_line(result):
    data = json.loads(json.dumps(result.to_dict()))
    assert type(result).from_dict(data) == result
    line = result.summary()
    assert "\n" not in line and line.startswith("yarn")
    for fig in getattr(result, "figures", lambda: [])():
        assert fig.data and fig.layout.title.text


def test_the_lines_say_what_was_measured():
    assert RESULTS[0].summary(" [llama.cpp]") == ("yarn @ 256 [llama.cpp]: PPL 12.500 (last quarter 12.182; 2 documents, "
                                                  "1.2 s)")
    assert RESULTS[1].summary() == "yarn at L0 = 256: PPL 10.40 against original 10.00 (+4.0%)"
    assert RESULTS[2].summary() == "yarn passkey: 100% @ 256, 50% @ 512 (2 trials per length)"
    assert RESULTS[4].summary() == "yarn needle accuracy 62% over 2 depths x 2 lengths"
    assert RESULTS[4].markdown().splitlines()[2] == "| 0.00 | 100% | 50% |"
    assert "| yarn | 10.00 | 10.40 | +4.0% |" in regression_table([RESULTS[1]])


def test_an_evaluation_of_several_methods_presents_itself():
    ppl = [_ppl(m, L, p) for m, ps in (("default", (10.0, 90.0)), ("yarn", (10.5, 14.0)))
           for L, p in zip((256, 1024), ps, strict=True)]
    ev = Evaluation("teaching", 256, [256, 1024], "shakespeare", ["a", "b"], ppl, [RESULTS[2]], RESULTS[4],
                    [RESULTS[3]], [RESULTS[1]])
    assert ev.summary() == "teaching at 1024 tokens (4 x L0): default PPL 90.00, yarn PPL 14.00"
    assert ev.to_dict()["ppl"] == {"default": {"256": 10.0, "1024": 90.0}, "yarn": {"256": 10.5, "1024": 14.0}}
    assert ev.to_dict()["short_context_change"] == {"yarn": pytest.approx(0.04)}
    assert "| yarn |" in ev.markdown() and "change" in ev.markdown()
    titles = [f.layout.title.text for f in ev.figures()]
    assert titles[0] == "Perplexity by evaluation length" and titles[-1] == "Needle retrieval: yarn"


def test_a_method_comparison_presents_itself():
    from workbench.evaluate import MethodComparison
    from workbench.rope import make_spec, method_specs

    like = make_spec("linear", head_dim=16, rope_theta=10000.0, original_max_position_embeddings=256, factor=4.0)
    specs = method_specs(like, ["default", "yarn"])
    results = [_ppl(m, L, p) for m, ps in (("default", (10.0, 90.0)), ("yarn", (10.5, 14.0)))
               for L, p in zip((256, 1024), ps, strict=True)]
    entropy = [EntropyResult("yarn", 1024, [0], 2, 256, [[[1.0, 2.0, 2.5, 3.0]] * 2], [[[0.5] * 4] * 2], [256] * 4)]
    cmp = MethodComparison("teaching", "shakespeare", 256, [256, 1024], specs, results, entropy, ["a", "b"])
    data = cmp.to_dict()
    assert data["ppl"] == {"default": {"256": 10.0, "1024": 90.0}, "yarn": {"256": 10.5, "1024": 14.0}}
    assert data["rope_parameters"]["yarn"]["rope_type"] == "yarn" and data["measured"]
    assert data["entropy_beyond_L0"] == {"yarn": pytest.approx(2.5)}  # the buckets from L0 on: 2.0, 2.5, 3.0
    assert "attention entropy beyond L0" in cmp.markdown() and cmp.summary().endswith("yarn PPL 14.00")
    assert [f.layout.title.text.split(" at ")[0] for f in cmp.figures()] == [
        "Perplexity by evaluation length", "Loss by position", "Entropy by query position (mean of layers, heads)"]
    assert len(cmp.figures("entropy")) == 1
    unmeasured = MethodComparison("teaching", "shakespeare", 256, [1024], specs)
    assert unmeasured.to_dict()["measured"] is False and unmeasured.figures() == [] and unmeasured.markdown() == ""


def test_an_entropy_comparison_presents_itself():
    from workbench.entropy import EntropyComparison

    def run(label, length, buckets):
        return EntropyResult(label, length, [0], 2, length // len(buckets), [[buckets] * 2], [[[0.5] * len(buckets)] * 2],
                             [length // len(buckets)] * len(buckets), seconds=1.0)

    runs = [run("no scaling @ L0 (256)", 256, [1.0, 2.0]), run("no scaling @ 1024", 1024, [1.0, 2.0, 3.0, 4.0]),
            run("yarn", 1024, [1.0, 2.0, 2.5, 3.0])]
    cmp = EntropyComparison("teaching", 256, 1024, "yarn", "a play", runs)
    assert cmp.beyond_L0() == {"no scaling @ 1024": pytest.approx(3.0), "yarn": pytest.approx(2.5)}
    assert cmp.summary() == "mean entropy beyond L0: no scaling @ 1024 3.000 nats, yarn 2.500 nats"
    assert "| yarn | 2.125 | 3.000 |" in cmp.markdown()
    assert len(cmp.figures("position")) == 1 and len(cmp.figures()) == 3
    assert cmp.to_dict()["mean_entropy"]["no scaling @ L0 (256)"] == pytest.approx(1.5)


def test_a_short_context_report_carries_what_it_read_beyond_L0():
    from workbench.progressive_results import ShortContextReport

    report = ShortContextReport({"original": 10.0, "before recovery": 11.0, "after recovery": 10.1}, 4)
    assert len(report.figures(256)) == 1 and "Beyond" not in report.markdown()
    full = report.with_beyond([_ppl("before recovery", 512, 14.0), _ppl("after recovery", 512, 13.5)])
    assert len(full.figures(256)) == 2 and "Beyond L0" in full.markdown() and "| after recovery |" in full.markdown()
    assert full.results()["ppl_beyond_L0"] == {"before recovery": {"512": 14.0}, "after recovery": {"512": 13.5}}
    assert "ppl_beyond_L0" not in report.results() and full.change == pytest.approx(0.01)
