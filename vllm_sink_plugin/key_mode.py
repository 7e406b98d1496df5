# SPDX-License-Identifier: Apache-2.0
"""Which of the two exact designs caches a sink request's keys.

* ``rotated`` (GPU always; CPU by default): keys enter the cache rotated once,
  as in stock vLLM, so vLLM's own attention kernels (FlashAttention 3 and CUDA
  graphs on GPU, the CPU_ATTN kernels on CPU) run unchanged. RoPE sees
  ``cache position + evicted tokens``; the sink blocks are re-rotated into
  per-request *view* blocks at each eviction.
  See :mod:`vllm_sink_plugin.attention.offset_rope`.
* ``raw`` (CPU with ``--sink-exact-tokens``, or ``VLLM_SINK_ROTATED_KEYS=0``):
  keys enter the cache before RoPE and the plugin's CPU attention rotates them
  from their in-cache positions on every read, skipping masked sink slots
  (:mod:`vllm_sink_plugin.attention.cpu_backend`).

Both give the same attention scores (RoPE depends only on the distance
between a query and a key); they differ in which kernels run::

    platform  --sink-exact-tokens  $VLLM_SINK_ROTATED_KEYS  keys
    GPU       (refused)            any                      rotated
    CPU       off                  unset or 1               rotated
    CPU       on                   unset or 0               raw
    CPU       any                  0                        raw
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

ENV_ROTATED_ON_CPU = "VLLM_SINK_ROTATED_KEYS"


def rotated_keys(additional_config: Mapping[str, Any] | Any = None) -> bool:
    """True if this process caches rotated keys for the engine's policy.

    Args:
        additional_config: the engine's ``additional_config`` (or its
            ``StreamingSinkConfig``); only ``sink_exact_tokens`` is read.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return True
    forced = os.environ.get(ENV_ROTATED_ON_CPU, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if isinstance(additional_config, Mapping):
        exact = additional_config.get("sink_exact_tokens", False)
    else:
        exact = getattr(additional_config, "sink_exact_tokens", False)
    return not exact
