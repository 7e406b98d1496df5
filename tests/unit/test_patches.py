# SPDX-License-Identifier: Apache-2.0
"""Every runtime patch is listed, documented with the schema, and idempotent."""

import importlib
import pkgutil

import pytest

from vllm_sink_plugin import patches
from vllm_sink_plugin.patches._base import original_of

SCHEMA = (
    "Target:",
    "Process:",
    "vLLM:",
    "Why:",
    "How:",
    "Upstream:",
    "Remove when:",
    "Tests:",
)


def _patch_modules_on_disk():
    found = []
    for process in ("common", "frontend", "engine", "worker"):
        package = importlib.import_module(f"vllm_sink_plugin.patches.{process}")
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("patch_"):
                found.append(f"{process}.{info.name}")
    return sorted(found)


def test_every_patch_file_is_listed():
    assert _patch_modules_on_disk() == sorted(patches.all_patch_modules())


@pytest.mark.parametrize("name", patches.all_patch_modules())
def test_docstring_schema(name):
    doc = importlib.import_module(f"vllm_sink_plugin.patches.{name}").__doc__
    for field in SCHEMA:
        assert field in doc, f"{name} lacks {field}"


def test_apply_twice_is_a_noop():
    from vllm.engine.arg_utils import EngineArgs

    patches.apply_patches()
    first = EngineArgs.__dict__["create_engine_config"]
    patches.apply_patches()
    assert EngineArgs.__dict__["create_engine_config"] is first
    original = original_of(first)
    assert original is not None and original_of(original) is None


def test_scheduler_stats_carry_sink_stats_between_processes():
    from vllm.v1.engine import EngineCoreOutputs
    from vllm.v1.metrics.stats import SchedulerStats
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    patches.apply_patches()
    stats = SchedulerStats(num_running_reqs=2)
    assert stats.sink_stats is None
    stats.sink_stats = {"running": 2, "cache_blocks": [3, 4], "evicted_blocks": 9}
    wire = MsgpackEncoder().encode(EngineCoreOutputs(scheduler_stats=stats))
    got = MsgpackDecoder(EngineCoreOutputs).decode(wire).scheduler_stats
    assert got.sink_stats == stats.sink_stats and got.num_running_reqs == 2
    stock = MsgpackEncoder().encode(EngineCoreOutputs(scheduler_stats=SchedulerStats()))
    assert (
        MsgpackDecoder(EngineCoreOutputs).decode(stock).scheduler_stats.sink_stats
        is None
    )
