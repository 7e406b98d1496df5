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
    trace.record("register")
