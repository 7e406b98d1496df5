# SPDX-License-Identifier: Apache-2.0
"""gpu_bench's repetitions: the run order and the median/spread report."""

from __future__ import annotations

from benchmarks.gpu.plan import SIZES, build_plan, repeat_plan
from benchmarks.gpu.report import _spread, _spread_text, repeated_ratios


def test_repetitions_alternate_the_engines_and_repeat_only_the_ratios():
    jobs = build_plan(SIZES["small"], {"p1", "p2"})
    planned = repeat_plan(jobs, 3)
    names = [(rep, job.name) for rep, job in planned]
    assert names[: len(jobs)] == [(1, job.name) for job in jobs]
    assert names[len(jobs) :] == [
        (2, "baseline-1b-rep2"),
        (2, "plugin-1b-rep2"),
        (3, "plugin-1b-rep3"),
        (3, "baseline-1b-rep3"),
    ]
    for rep, job in planned:
        if rep > 1:
            assert {t.name for t in job.tasks} <= {
                "p1_plugin",
                "p1_baseline",
                "p2_plugin",
                "p2_baseline",
            }
    assert repeat_plan(jobs, 1) == [(1, job) for job in jobs]


def test_summary_keeps_the_median_and_the_spread():
    raw = {
        "reps": {
            "p1_plugin": [{"tok_s": 97.0}, {"tok_s": 99.0}, {"error": "x"}],
            "p1_baseline": [{"tok_s": 100.0}, {"tok_s": 100.0}, {"tok_s": 100.0}],
            "p2_plugin": [{"tok_s": 90.0}, {"tok_s": 96.0}, {"tok_s": 95.0}],
            "p2_baseline": [
                {"decode_tok_s": 100.0},
                {"decode_tok_s": 100.0},
                {"decode_tok_s": 100.0},
            ],
        }
    }
    assert repeated_ratios(raw, "p1_no_eviction_ratio") == [0.97, 0.99]
    summary = {"p1_no_eviction_ratio": 0.97, "p2_streaming_ratio": 0.9}
    _spread(summary, raw)
    assert summary["p2_streaming_ratio"] == 0.95
    assert summary["p2_streaming_ratio_runs"] == [0.9, 0.96, 0.95]
    assert (summary["p2_streaming_ratio_min"], summary["p2_streaming_ratio_max"]) == (
        0.9,
        0.96,
    )
    assert summary["p1_no_eviction_ratio"] == 0.98
    text = _spread_text(summary, "p2_streaming_ratio", ">=", 0.95)
    assert "median of 3" in text and "straddles" in text
    assert "straddles" not in _spread_text(summary, "p1_no_eviction_ratio", ">=", 0.9)


def test_a_single_measurement_reports_itself():
    summary = {"p1_no_eviction_ratio": 0.99, "p2_streaming_ratio": None}
    _spread(summary, {"tasks": {}})
    assert summary["p1_no_eviction_ratio_runs"] == [0.99]
    assert summary["p2_streaming_ratio_runs"] == []
    assert summary["p2_streaming_ratio_min"] is None
    assert _spread_text(summary, "p1_no_eviction_ratio", ">=", 0.98) == ""
