# SPDX-License-Identifier: Apache-2.0
"""Which of the two exact designs caches a sink request's keys.

* ``rotated`` (GPU, and CPU on request): keys enter the cache rotated once,
  as in stock vLLM, so vLLM's own attention kernels (FlashAttention 3, CUDA
  graphs) run unchanged. RoPE sees ``cache position + evicted tokens``; the
  sink blocks are re-rotated into per-request *view* blocks at each eviction.
  See :mod:`vllm_sink_plugin.attention.offset_rope`.
* ``raw`` (CPU default): keys enter the cache before RoPE and the CPU
  attention backend rotates them from their in-cache positions on every read
  (:mod:`vllm_sink_plugin.attention.cpu_backend`).

Both give the same attention scores (RoPE depends only on the distance
between a query and a key); they differ in which kernels run.
"""

from __future__ import annotations

import os

ENV_ROTATED_ON_CPU = "VLLM_SINK_ROTATED_KEYS"


def rotated_keys() -> bool:
    """True unless this is the CPU platform without ``VLLM_SINK_ROTATED_KEYS=1``."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return True
    return os.environ.get(ENV_ROTATED_ON_CPU, "0") == "1"
