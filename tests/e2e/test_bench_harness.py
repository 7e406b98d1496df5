# SPDX-License-Identifier: Apache-2.0
"""The GPU benchmark harness end to end, at smoke size on CPU.

Runs ``python -m benchmarks.gpu_bench --scale smoke --device cpu`` as the GPU
machine runs it (one child process per engine, the stock engine without the
plugin) and checks the reports. The numbers themselves mean nothing here:
the model is tiny and the CPU is shared. Keys are cached rotated
(``VLLM_SINK_ROTATED_KEYS=1``), as on GPUs, so that P5 finds the plugin's
``sink::*`` profiler ranges.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
RATIOS = (
    "p1_no_eviction_ratio",
    "p2_streaming_ratio",
    "p2_flatness_last_vs_first",
    "p3_vs_dense_64k_ratio",
    "p4_vs_recompute_per_token_ratio",
    "p4_vs_half_window_restart_ratio",
)


def test_smoke_on_cpu_writes_every_report(tmp_path):
    from benchmarks.gpu.report import KEYS

    out = tmp_path / "bench"
    command = [
        sys.executable,
        "-m",
        "benchmarks.gpu_bench",
        "--out",
        str(out),
        "--scale",
        "smoke",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "VLLM_SINK_ROTATED_KEYS": "1"}
    proc = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=230
    )
    log = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, log

    summary = json.loads((out / "summary.json").read_text())
    assert set(KEYS) | {"scale", "workloads"} <= set(summary), sorted(summary)
    assert summary["gpu"] == "cpu" and summary["scale"] == "smoke"
    assert summary["command"].endswith("--scale smoke --device cpu")
    for key in RATIOS:
        assert isinstance(summary[key], float) and summary[key] > 0, (key, log)
    assert 0 < summary["p5_plugin_kernel_share"] < 1
    # A stream holds its sink block, 3 window blocks (96 tokens), the block
    # being written and its sink view: never more, however long it streams.
    assert 4 <= summary["kv_blocks_per_stream_max"] <= 6
    for name in ("summary.md", "raw.json", "tokps_vs_tokens.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "memory_vs_tokens.png").stat().st_size > 0

    raw = json.loads((out / "raw.json").read_text())
    assert not any("error" in t for t in raw["tasks"].values()), raw["tasks"]
    plugin, stock = raw["engines"].values()
    assert plugin["scheduler_cls"].endswith("StreamingSinkScheduler")
    assert stock["VLLM_PLUGINS"] == "" and not stock["plugin_loaded"]
    assert stock["scheduler_cls"] == "vllm.v1.core.sched.scheduler.Scheduler"
    assert "sink::rope_table" in raw["tasks"]["p5_profile"]["ranges"]
    soak = raw["tasks"]["soak"]
    assert soak["errors"] == 0 and soak["blocks_leaked"] == 0, soak
    assert "| P1 no-eviction overhead" in (out / "summary.md").read_text()
