# SPDX-License-Identifier: Apache-2.0
"""Every runtime change the plugin makes to vLLM, applied in one order.

Each patch is one module with an idempotent ``apply()`` and a docstring with
Target / Process / vLLM / Why / How / Upstream / Remove when / Tests; the
top-level ``patches/README.md`` of the repository indexes them with diffs.
The vLLM symbols they rely on are listed in :mod:`vllm_sink_plugin.compat`.

:func:`apply_patches` installs the runtime patches (a supported vLLM);
:func:`apply_refusal` installs only the refusal of ``--kv-policy sink``
(an unsupported vLLM, or one a patch could not be applied to).
"""

from __future__ import annotations

import importlib

from vllm_sink_plugin.patches._base import unwrap_all

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
# Installed instead of all of the above where the plugin is disabled.
REFUSAL_PATCHES = ("frontend.patch_version_refusal",)


class PatchError(RuntimeError):
    """A runtime patch could not be applied.

    Attributes:
        module: the patch module (``"worker.patch_model_runner_v2"``).
    """

    def __init__(self, module: str, error: BaseException):
        super().__init__(f"{module}: {type(error).__name__}: {error}")
        self.module = module


def runtime_patch_modules() -> tuple[str, ...]:
    """The patches of a supported vLLM, in the order they are applied."""
    return COMMON_PATCHES + FRONTEND_PATCHES + WORKER_PATCHES


def all_patch_modules() -> tuple[str, ...]:
    """Every patch module, the refusal included."""
    return runtime_patch_modules() + REFUSAL_PATCHES


def _module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def apply_patches() -> None:
    """Applies every runtime patch; safe to call again.

    Raises:
        PatchError: naming the first patch that failed (the ones before it
            stay applied: :func:`restore_patches` undoes them).
    """
    for name in runtime_patch_modules():
        try:
            _module(name).apply()
        except Exception as error:
            raise PatchError(name, error) from error


def restore_patches() -> int:
    """Undoes every wrap the patches installed; returns how many."""
    return unwrap_all()


def apply_refusal(reason: str) -> None:
    """Makes ``--kv-policy sink`` fail at engine config time with ``reason``.

    Raises:
        PatchError: the refusal could not be installed.
    """
    (name,) = REFUSAL_PATCHES
    try:
        _module(name).apply(reason)
    except Exception as error:
        raise PatchError(name, error) from error
