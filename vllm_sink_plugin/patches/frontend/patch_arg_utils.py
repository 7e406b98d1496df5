# SPDX-License-Identifier: Apache-2.0
"""The plugin's flags (``--kv-policy``, ``--num-sink-tokens``...) for every vLLM CLI.

Target:      vllm.engine.arg_utils.EngineArgs.{add_cli_args, from_cli_args,
             create_engine_config}
Process:     frontend (``vllm serve``, ``LLM(...)``, Ray Serve replicas)
vLLM:        0.32.0, 0.33.0 (compat.SUPPORTED_VLLM; verified 0.32.0 CPU;
             0.32.0 and 0.33.0 CUDA, H100: tests/gpu)
Why:         vLLM has no API for a plugin's engine flags, and ``from_cli_args``
             keeps only dataclass fields, so unknown flags would be dropped.
How:         ``add_cli_args`` gets a "StreamingLLM" argument group;
             ``from_cli_args`` moves the flags into ``additional_config`` (the
             official carrier, which reaches the engine core and the
             workers); ``create_engine_config`` validates the policy once
             against the final block size and max_model_len.
Upstream:    none: vLLM has no engine-flag plugin API.
Remove when: vLLM offers plugin-defined engine arguments.
Tests:       tests/unit/test_config.py, tests/e2e/test_serve_cli.py
"""

from __future__ import annotations

import argparse
from typing import Any

from vllm_sink_plugin.config import (
    DEFAULT_NUM_SINK_TOKENS,
    DEFAULT_SINK_MAX_PROMPT_TOKENS,
    DEFAULT_SINK_WINDOW,
    FLAGS,
    KV_POLICIES,
    StreamingSinkConfig,
    StreamingSinkConfigError,
)
from vllm_sink_plugin.patches._base import wrap_attribute

GROUP_TITLE = "StreamingLLM"


def add_sink_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the plugin's flags; an absent flag leaves no attribute."""
    group = parser.add_argument_group(
        title=GROUP_TITLE,
        description="vllm-sink-plugin: attention sinks + a rolling KV cache. The "
        "same settings are accepted as additional_config keys: "
        + ", ".join(FLAGS)
        + ".",
    )
    group.add_argument(
        FLAGS["kv_policy"],
        choices=KV_POLICIES,
        default=argparse.SUPPRESS,
        help="KV cache policy: 'none' is stock vLLM; 'sink' keeps the first "
        "tokens as attention sinks plus a rolling window of recent tokens, "
        "so a stream never ends for lack of context (evicted text is "
        "forgotten). Default: none.",
    )
    group.add_argument(
        FLAGS["num_sink_tokens"],
        type=int,
        default=argparse.SUPPRESS,
        help="Sink tokens kept forever at the start of each stream (>= 0, "
        f"< --sink-window; rounded up to whole KV blocks). Default: "
        f"{DEFAULT_NUM_SINK_TOKENS}.",
    )
    group.add_argument(
        FLAGS["sink_window"],
        type=int,
        default=argparse.SUPPRESS,
        help="Recent tokens kept besides the sinks (>= the KV block size; "
        "sinks + window must fit in --max-model-len). Default: "
        f"{DEFAULT_SINK_WINDOW} (the paper's 4 + 1020 cache).",
    )
    group.add_argument(
        FLAGS["sink_prefill_chunk"],
        type=int,
        default=argparse.SUPPRESS,
        help="Most prompt tokens of a sink request processed in one step (>= 1; "
        "1 is the paper's token-by-token feeding). Each token of a chunk sees "
        "the sinks, the window before the chunk and the chunk's earlier "
        "tokens. Default: one window (--sink-window rounded up to blocks).",
    )
    group.add_argument(
        FLAGS["sink_request_default"],
        choices=KV_POLICIES,
        default=argparse.SUPPRESS,
        help="The policy of requests that name none: 'none' makes StreamingLLM "
        "opt-in per request (kv_policy 'sink' in extra_body). Default: sink.",
    )
    group.add_argument(
        FLAGS["pin_system_prompt"],
        dest="pin_system_prompt",
        action="store_true",
        default=argparse.SUPPRESS,
        help="Chat requests keep their whole system message as sinks (at least "
        "--num-sink-tokens), like llama.cpp's --keep.",
    )
    group.add_argument(
        FLAGS["sink_exact_tokens"],
        action="store_true",
        default=argparse.SUPPRESS,
        help="Once the window rolls, attend exactly --num-sink-tokens sinks "
        "instead of whole sink blocks (the paper's sink counts below the block "
        "size). Raw-key CPU backend only; refused with rotated keys (GPU).",
    )
    group.add_argument(
        FLAGS["sink_max_prompt_tokens"],
        type=int,
        default=argparse.SUPPRESS,
        help="Most prompt tokens of one sink request (max_model_len does not "
        "limit them: prompts stream through the cache); with prompt_logprobs=k "
        "at most this many / (k + 1). Longer prompts get HTTP 400. Default: "
        f"{DEFAULT_SINK_MAX_PROMPT_TOKENS}.",
    )


def merge_cli_into_additional_config(
    args: argparse.Namespace, additional_config: dict[str, Any] | None
) -> dict[str, Any]:
    """The additional_config with the given flags folded in.

    Raises:
        StreamingSinkConfigError: a flag and an additional_config key disagree.
    """
    merged = dict(additional_config or {})
    for key, flag in FLAGS.items():
        value = getattr(args, key, None)
        if value is None:
            continue
        if key in merged and merged[key] != value:
            raise StreamingSinkConfigError(
                f"{flag}={value} contradicts additional_config['{key}']="
                f"{merged[key]!r}; give the setting once"
            )
        merged[key] = value
    return merged


def _add_cli_args(original):
    def add_cli_args(parser, *args, **kwargs):
        parser = original(parser, *args, **kwargs)
        add_sink_arguments(parser)
        return parser

    return add_cli_args


def _from_cli_args(original):
    def from_cli_args(cls, args):
        engine_args = original(cls, args)
        engine_args.additional_config = merge_cli_into_additional_config(
            args, engine_args.additional_config
        )
        StreamingSinkConfig.from_mapping(engine_args.additional_config)
        return engine_args

    return from_cli_args


def _async_capable() -> bool:
    """Model Runner V2 (vLLM's default on GPU; never on CPU) runs async steps."""
    import os

    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return False
    return os.environ.get("VLLM_USE_V2_MODEL_RUNNER") != "0"


def _create_engine_config(original):
    def create_engine_config(self, *args, **kwargs):
        sink = StreamingSinkConfig.from_mapping(self.additional_config)
        if sink.enabled and self.async_scheduling is None and not _async_capable():
            # Raw keys (CPU) and Model Runner V1 need synchronous steps.
            self.async_scheduling = False
        vllm_config = original(self, *args, **kwargs)
        from vllm_sink_plugin.engine_setup import apply_policy

        apply_policy(vllm_config)
        return vllm_config

    return create_engine_config


def apply() -> None:
    from vllm.engine.arg_utils import EngineArgs

    wrap_attribute(EngineArgs, "add_cli_args", _add_cli_args, kind="staticmethod")
    wrap_attribute(EngineArgs, "from_cli_args", _from_cli_args, kind="classmethod")
    wrap_attribute(EngineArgs, "create_engine_config", _create_engine_config)
