# SPDX-License-Identifier: Apache-2.0
"""Loggers that print where vLLM's do.

vLLM configures handlers on its ``vllm`` logger only; a logger named after this
package would fall through to Python's last-resort handler (WARNING and up), so
the plugin logs under ``vllm.sink_plugin``.
"""

from __future__ import annotations

import logging


def init_logger(module_name: str) -> logging.Logger:
    """``vllm.sink_plugin.<module>`` for a ``vllm_sink_plugin.<module>`` name."""
    from vllm.logger import init_logger as vllm_init_logger

    suffix = module_name.removeprefix("vllm_sink_plugin").lstrip(".")
    return vllm_init_logger(f"vllm.sink_plugin.{suffix}".rstrip("."))
