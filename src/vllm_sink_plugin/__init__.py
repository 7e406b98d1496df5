# SPDX-License-Identifier: Apache-2.0
"""vllm-sink-plugin: StreamingLLM (attention sinks + rolling KV) for vLLM.

vLLM calls :func:`register` through the ``vllm.general_plugins`` entry point
in every process it starts (API server, engine core, workers, Ray actors).
"""

from __future__ import annotations

__version__ = "0.1.0"

_registered = False


def register() -> None:
    """Installs the plugin into this process; idempotent and cheap."""
    global _registered
    if _registered:
        return
    _registered = True
    from vllm_sink_plugin import trace
    from vllm_sink_plugin.patches import apply_patches

    apply_patches()
    _register_attention_backend()
    trace.record("register")


def _register_attention_backend() -> None:
    """On CPU, ``CPU_ATTN`` resolves to our subclass (official override).

    The subclass is vLLM's own backend unless the engine's policy is sink.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.v1.attention.backends.registry import (
        AttentionBackendEnum,
        register_backend,
    )

    register_backend(
        AttentionBackendEnum.CPU_ATTN,
        "vllm_sink_plugin.attention.cpu_backend.StreamingSinkCpuBackend",
    )
