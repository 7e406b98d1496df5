# SPDX-License-Identifier: Apache-2.0
"""Every runtime change the plugin makes to vLLM 0.32, applied in one order.

Each patch is one module with an idempotent ``apply()`` and a docstring with
Target / Process / vLLM / Why / How / Upstream / Remove when / Tests; the
top-level ``patches/README.md`` of the repository indexes them with diffs.
"""

from __future__ import annotations

import importlib

# Patches for the process that parses arguments and builds the VllmConfig.
FRONTEND_PATCHES = (
    "frontend.patch_arg_utils",
    "frontend.patch_api_max_tokens",
    "frontend.patch_request_policy",
    "frontend.patch_input_processor",
)
# Patches for every process (data that crosses process boundaries).
COMMON_PATCHES = ("common.patch_scheduler_stats",)
# Patches for the worker processes (model runner, attention).
WORKER_PATCHES = ("worker.patch_gpu_model_runner", "worker.patch_model_runner_v2")


def all_patch_modules() -> tuple[str, ...]:
    return COMMON_PATCHES + FRONTEND_PATCHES + WORKER_PATCHES


def apply_patches() -> None:
    """Applies every patch; safe to call again."""
    for name in all_patch_modules():
        importlib.import_module(f"{__name__}.{name}").apply()
