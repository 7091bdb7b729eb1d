"""Reports: the markdown tables read the right cells, results round-trip through JSON files."""

from __future__ import annotations

import json
import math

import torch

from workbench.data import Sample
from workbench.evaluate import evaluation_table, format_table, make_result, write_results


def _result(label: str, length: int, level: float, L0: int = 64):
    """A result whose loss is ``level`` before position L0 and ``level + 1`` from it on."""
    curve = torch.tensor([level if i < L0 else level + 1 for i in range(length - 1)])
    sample = Sample(torch.zeros(length, dtype=torch.long), "t", "?", ["d"])
    return make_result(label, length, "truncated", [sample], [curve], curve, 16, 1.5, length, "fp32", None, None)


def test_evaluation_table_splits_the_longest_read_at_L0_and_compares_to_the_first_setting():
    results = [_result("default", 64, 1.0), _result("default", 128, 1.0), _result("yarn", 64, 1.1),
               _result("yarn", 128, 1.1)]
    table = evaluation_table(results, 64, {"yarn": 0.5})
    head, _, default, yarn = table.splitlines()
    assert "PPL of positions < L0 @ 128" in head and "PPL @ L0 vs default" in head
    cells = [c.strip() for c in yarn.strip("|").split("|")]
    assert cells[0] == "yarn" and float(cells[3]) == round(math.exp(1.1), 2) and float(cells[4]) == round(math.exp(2.1), 2)
    assert cells[-2] == f"{math.exp(1.1) / math.exp(1.0) - 1:+.1%}" and cells[-1] == "0.500"
    assert default.split("|")[-2].strip() == ""  # no entropy measured for it


def test_format_table_has_a_row_per_setting_and_seconds_per_length():
    yarn = _result("yarn", 128, 1.1)
    table = format_table([_result("default", 64, 1.0), yarn])
    assert table.splitlines()[0] == "| method | PPL @ 64 | PPL @ 128 | seconds @ 64 | seconds @ 128 |"
    assert f"| yarn |  | {yarn.ppl:.2f} |  | 1.5 |" in table


def test_write_results_writes_one_result_or_a_list(tmp_path):
    r = _result("default", 64, 1.0)
    assert json.loads(write_results(r, tmp_path / "one.json").read_text())["label"] == "default"
    assert [x["length"] for x in json.loads(write_results([r, r], tmp_path / "a" / "two.json").read_text())] == [64, 64]
