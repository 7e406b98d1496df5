# SPDX-License-Identifier: Apache-2.0
"""Whether a model runner serves the sink policy, and with which key design.

Both runner patches (V1 and V2) ask this before doing anything: a runner of
an engine without ``kv_policy: sink`` stays stock.
"""

from __future__ import annotations


def sink_enabled(runner) -> bool:
    """True if the runner's engine has ``additional_config kv_policy: sink``."""
    cached = getattr(runner, "_sink_policy_enabled", None)
    if cached is None:
        from vllm_sink_plugin.config import StreamingSinkConfig

        config = runner.vllm_config.additional_config
        cached = StreamingSinkConfig.from_mapping(config).enabled
        runner._sink_policy_enabled = cached
    return cached


def rotated_keys_installed(runner) -> bool:
    """True once ``load_model`` gave the runner's model offset RoPE (GPU)."""
    return getattr(runner, "_sink_rope_table", None) is not None
