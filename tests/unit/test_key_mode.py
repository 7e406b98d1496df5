# SPDX-License-Identifier: Apache-2.0
"""Which key design a CPU engine runs (key_mode's table)."""

from __future__ import annotations

import pytest

from vllm_sink_plugin.config import StreamingSinkConfig
from vllm_sink_plugin.key_mode import ENV_ROTATED_ON_CPU, rotated_keys


@pytest.mark.parametrize(
    ("exact", "env", "rotated"),
    [
        (False, None, True),  # the CPU default: vLLM's own kernels
        (False, "1", True),
        (True, None, False),  # exact sinks need the raw-key backend
        (True, "0", False),
        (False, "0", False),  # raw keys on request (tests, comparisons)
        (True, "1", True),  # then refused at startup by engine_setup
    ],
)
def test_cpu_design(monkeypatch, exact, env, rotated):
    if env is None:
        monkeypatch.delenv(ENV_ROTATED_ON_CPU, raising=False)
    else:
        monkeypatch.setenv(ENV_ROTATED_ON_CPU, env)
    raw = {"kv_policy": "sink", "sink_exact_tokens": exact}
    assert rotated_keys(raw) is rotated
    assert rotated_keys(StreamingSinkConfig.from_mapping(raw)) is rotated
