"""gpu_check's own machinery, without an engine: a section's error or skip is written, not raised."""

from __future__ import annotations

import argparse
import json

import pytest

gpu_check = pytest.importorskip("gpu_check")


def check_for(tmp_path, budget_s: float) -> gpu_check.Check:
    args = argparse.Namespace(budget_s=budget_s, micro_batch=4, out=str(tmp_path / "c.json"), device="cpu", smoke=True)
    return gpu_check.Check(args)


def test_a_failing_section_is_recorded_and_the_next_still_runs(tmp_path):
    check = check_for(tmp_path, 100)

    def broken(_):
        raise ValueError("no such kernel")

    check.section("first", broken, 0)
    check.section("second", lambda _: {"value": 1}, 0)
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["sections"]["first"]["status"] == "error"
    assert "ValueError: no such kernel" in report["first"]["error"]
    assert report["second"] == {"value": 1} and report["sections"]["second"]["status"] == "ok"


def test_a_section_over_the_budget_is_skipped_with_its_reason(tmp_path):
    check = check_for(tmp_path, 5)
    ran = []
    check.section("big", lambda _: ran.append(1), 60)
    report = json.loads((tmp_path / "c.json").read_text())
    assert not ran
    assert report["skipped"] == [{"section": "big", "reason": report["sections"]["big"]["reason"]}]
    assert "needs about 60 s" in report["skipped"][0]["reason"]


def test_busy_time_is_the_union_of_kernel_intervals():
    assert gpu_check.busy_us([(0, 10), (5, 15), (20, 25), (21, 22)]) == 20
    assert gpu_check.busy_us([]) == 0
