# SPDX-License-Identifier: Apache-2.0
"""Where the plugin is disabled, ``--kv-policy sink`` fails at startup by name.

Target:      vllm.engine.arg_utils.EngineArgs.{add_cli_args, from_cli_args,
             create_engine_config}
Process:     frontend (``vllm serve``, ``LLM(...)``, Ray Serve replicas)
vLLM:        any: installed instead of every other patch on a vLLM outside
             compat.SUPPORTED_VLLM, or after a patch could not be applied
Why:         A disabled plugin leaves vLLM stock; a sink configuration must
             not start a stock engine that silently runs dense (or half
             patched), and ``--kv-policy`` must not fail as an unknown flag
             that does not say why.
How:         ``add_cli_args`` still adds the plugin's flags and
             ``from_cli_args`` folds them into ``additional_config``, as
             patch_arg_utils does; ``create_engine_config`` raises
             ``StreamingSinkConfigError`` naming the reason (the installed
             and the supported vLLM versions, or the patch that failed)
             when ``additional_config['kv_policy']`` is ``"sink"``, and is
             stock otherwise. Each wrapper is installed only where the
             target has the expected form, and the flags are skipped (with
             a log line) if argparse refuses them: this patch must never
             break stock vLLM. Per-request fields (``kv_policy`` in
             ``extra_body`` / ``vllm_xargs``) are not read: vLLM's OpenAI
             server logs unknown top-level fields as ignored and passes
             ``vllm_xargs`` on unread, so such requests run as stock requests
             of the stock engine (no sink engine can exist there).
Upstream:    none: this is the plugin's own version guard.
Remove when: never (it guards compat.SUPPORTED_VLLM).
Tests:       tests/compat/test_guard.py
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from vllm_sink_plugin.config import StreamingSinkConfigError
from vllm_sink_plugin.patches._base import wrap_attribute
from vllm_sink_plugin.patches.frontend.patch_arg_utils import (
    add_sink_arguments,
    merge_cli_into_additional_config,
)

# Why the plugin is disabled in this process (set by apply()).
_reason = "vllm-sink-plugin is disabled"


def refusal(additional_config: Mapping[str, Any] | None) -> str | None:
    """The error message for an engine config, or None if it is not sink."""
    if not isinstance(additional_config, Mapping):
        return None
    if additional_config.get("kv_policy") != "sink":
        return None
    return f"--kv-policy sink (additional_config['kv_policy']) is refused: {_reason}"


def check(additional_config: Mapping[str, Any] | None) -> None:
    """Refuses a sink engine config.

    Raises:
        StreamingSinkConfigError: ``additional_config`` asks for kv_policy sink.
    """
    message = refusal(additional_config)
    if message is not None:
        raise StreamingSinkConfigError(message)


def _warn(message: str, *args) -> None:
    try:
        from vllm_sink_plugin.log import init_logger

        init_logger(__name__).warning(message, *args)
    except Exception:
        import logging

        logging.getLogger("vllm.sink_plugin").warning(message, *args)


def _add_cli_args(original):
    def add_cli_args(parser, *args, **kwargs):
        result = original(parser, *args, **kwargs)
        try:
            add_sink_arguments(result if result is not None else parser)
        except Exception as error:  # e.g. vLLM grew a flag of the same name
            _warn("vllm-sink-plugin: its flags were not added: %s", error)
        return result

    return add_cli_args


def _from_cli_args(original):
    def from_cli_args(cls, args, *rest, **kwargs):
        engine_args = original(cls, args, *rest, **kwargs)
        engine_args.additional_config = merge_cli_into_additional_config(
            args, getattr(engine_args, "additional_config", None)
        )
        return engine_args

    return from_cli_args


def _create_engine_config(original):
    def create_engine_config(self, *args, **kwargs):
        check(getattr(self, "additional_config", None))
        return original(self, *args, **kwargs)

    return create_engine_config


def _kind(owner: type, name: str) -> str:
    raw = inspect.getattr_static(owner, name, None)
    if isinstance(raw, staticmethod):
        return "staticmethod"
    if isinstance(raw, classmethod):
        return "classmethod"
    return "function" if inspect.isfunction(raw) else type(raw).__name__


def apply(reason: str) -> None:
    """Installs the refusal; ``reason`` ends every refusal message.

    Raises:
        TypeError: ``EngineArgs.create_engine_config`` is not a method.
    """
    global _reason
    _reason = reason
    from vllm.engine.arg_utils import EngineArgs

    if _kind(EngineArgs, "create_engine_config") != "function":
        raise TypeError("EngineArgs.create_engine_config is not a method")
    wrap_attribute(EngineArgs, "create_engine_config", _create_engine_config)
    flags = (
        ("add_cli_args", _add_cli_args, "staticmethod"),
        ("from_cli_args", _from_cli_args, "classmethod"),
    )
    if all(_kind(EngineArgs, name) == kind for name, _, kind in flags):
        for name, make, kind in flags:
            wrap_attribute(EngineArgs, name, make, kind=kind)
    else:
        _warn(
            "vllm-sink-plugin: EngineArgs.add_cli_args/from_cli_args changed; "
            "--kv-policy is not a flag here (additional_config is still checked)"
        )
