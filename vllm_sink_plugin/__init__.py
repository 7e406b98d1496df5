# SPDX-License-Identifier: Apache-2.0
"""vllm-sink-plugin: StreamingLLM (attention sinks + rolling KV) for vLLM.

vLLM calls :func:`register` through the ``vllm.general_plugins`` entry point
in every process it starts (API server, engine core, workers, Ray actors).
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

# True once every patch is applied (and the CPU backend registered).
_registered = False
# Why the plugin is disabled in this process; None while enabled or untried.
_disabled: str | None = None


def register() -> None:
    """Installs the plugin into this process; idempotent, cheap, never raises.

    * Supported vLLM (:data:`vllm_sink_plugin.compat.SUPPORTED_VLLM`, or any
      with ``VLLM_SINK_ALLOW_UNTESTED_VLLM=1``, logged): every patch is
      applied and the CPU attention backend registered.
    * Any other vLLM: no patch is applied; one warning is logged, and
      ``--kv-policy sink`` (flag or ``additional_config``) fails when the
      engine config is built, naming the installed and supported versions.
    * A patch that cannot be applied: the patches applied so far are undone,
      one error is logged, and ``--kv-policy sink`` fails naming the patch.

    Stock vLLM starts with the plugin installed whatever happens here.
    """
    global _disabled
    if _registered or _disabled is not None:
        return
    try:
        _register()
    except Exception as error:  # the plugin must never stop stock vLLM
        reason = f"vllm-sink-plugin disabled: {type(error).__name__}: {error}"
        try:
            _undo()
            _disable(reason, level=logging.ERROR)
        except Exception:
            _disabled = reason
            _logger().exception("%s", reason)


def disabled_reason() -> str | None:
    """Why :func:`register` left this process stock (None: it did not)."""
    return _disabled


def _logger() -> logging.Logger:
    try:
        from vllm_sink_plugin.log import init_logger

        return init_logger(__name__)
    except Exception:
        return logging.getLogger("vllm.sink_plugin")


def _register() -> None:
    global _registered
    from vllm_sink_plugin import compat, patches, trace

    version = compat.installed_version()
    if not compat.is_supported(version):
        if not compat.untested_allowed():
            _disable(compat.unsupported_message(version), level=logging.WARNING)
            return
        _logger().warning(
            "vllm-sink-plugin: vLLM %s is untested (supported: %s); patching it "
            "anyway because %s=1",
            version,
            ", ".join(compat.SUPPORTED_VLLM),
            compat.ALLOW_ENV,
        )
    try:
        patches.apply_patches()
        _register_attention_backend()
    except Exception as error:
        if isinstance(error, patches.PatchError):
            where, cause = error.module, error.__cause__
        else:
            where, cause = "the CPU attention backend", error
        _undo()
        _disable(
            f"vllm-sink-plugin disabled: could not patch {where} for vLLM "
            f"{version}: {type(cause).__name__}: {cause}",
            level=logging.ERROR,
        )
        return
    _registered = True
    _trace(trace, "register")


def _undo() -> None:
    from vllm_sink_plugin import patches

    patches.restore_patches()


def _trace(trace, event: str, **fields) -> None:
    try:
        trace.record(event, **fields)
    except Exception as error:  # a trace file we cannot write: tests only
        _logger().warning("vllm-sink-plugin: trace not written: %s", error)


def _disable(reason: str, *, level: int) -> None:
    """Leaves vLLM stock and makes ``--kv-policy sink`` fail with ``reason``."""
    global _disabled
    from vllm_sink_plugin import patches, trace

    _disabled = reason
    logger = _logger()
    logger.log(level, "%s", reason)
    try:
        patches.apply_refusal(reason)
    except Exception as error:
        _undo()
        logger.error(
            "vllm-sink-plugin: --kv-policy sink cannot be refused here either "
            "(%s); do not use it with this vLLM",
            error,
        )
    _trace(trace, "register_disabled", reason=reason)


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
