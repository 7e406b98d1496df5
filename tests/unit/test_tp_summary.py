# SPDX-License-Identifier: Apache-2.0
"""benchmarks/tp_summary.py: the TP=1 vs TP=2 record of issue 7."""

import json

import pytest

from benchmarks import tp_summary


def _raw(folder, tok_s, tp, backend):
    folder.mkdir(parents=True)
    raw = {
        "meta": {"gpu": "NVIDIA H100 80GB HBM3", "command": f"bench tp{tp}"},
        "engines": {
            "plugin-1b": {
                "tensor_parallel_size": tp,
                "distributed_executor_backend": backend,
            }
        },
        "tasks": {
            "p2_plugin": {
                "tok_s": tok_s,
                "overall_tok_s": tok_s + 1,
                "kv_blocks_per_stream_max": 259,
            }
        },
    }
    (folder / "raw.json").write_text(json.dumps(raw))


def test_summary_has_the_issue_keys(tmp_path):
    _raw(tmp_path / "tp1", 1000.0, 1, "uni")
    _raw(tmp_path / "tp2", 1500.0, 2, "ray")
    greedy = {"outputs_equal": True, "first_divergence": [None, None]}
    (tmp_path / "tp_greedy.json").write_text(json.dumps(greedy))
    assert tp_summary.main([str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tp1_tok_s"] == 1000.0 and summary["tp2_tok_s"] == 1500.0
    assert summary["tp2_vs_tp1"] == 1.5
    assert summary["outputs_equal"] is True
    assert summary["tp2_executor"] == "ray"
    assert summary["command"] == "bench tp1 ; bench tp2"
    assert "| tp2_tok_s | 1500.0 |" in (tmp_path / "summary.md").read_text()


def test_a_failed_run_is_an_error(tmp_path):
    _raw(tmp_path / "tp1", 1000.0, 1, "uni")
    (tmp_path / "tp2").mkdir()
    raw = {"meta": {}, "engines": {}, "tasks": {"p2_plugin": {"error": "boom"}}}
    (tmp_path / "tp2" / "raw.json").write_text(json.dumps(raw))
    with pytest.raises(SystemExit, match="p2_plugin has no result"):
        tp_summary.summarize(tmp_path)
