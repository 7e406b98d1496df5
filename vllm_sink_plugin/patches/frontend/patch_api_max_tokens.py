# SPDX-License-Identifier: Apache-2.0
"""The OpenAI server lets a sink engine generate past ``max_model_len``.

Target:      vllm.entrypoints.serve.utils.api_utils.get_max_tokens and every
             module's from-imported alias of it (ALIAS_MODULES);
             vllm.renderers.params.TokenizeParams.__post_init__;
             vllm.renderers.base.BaseRenderer.__init__
Process:     frontend (the API server processes, the render server)
vLLM:        0.32.0, 0.33.0 (compat.SUPPORTED_VLLM; verified 0.32.0 CPU;
             0.33.0: drift canaries, tests/compat)
Why:         The server clamps every request's ``max_tokens`` to
             ``max_model_len - prompt_len`` (``get_max_tokens``), and
             ``TokenizeParams`` rejects ``max_tokens > max_model_len`` with a
             400 before that. A sink request's cache never outgrows its
             window, so neither limit applies to it.
How:         ``BaseRenderer.__init__`` (every frontend builds one renderer
             from its VllmConfig) records the engine's policy in this
             process. For a sink request (the request being served is known
             through patch_request_policy's context variable; without one,
             while the process serves sink engines only) ``get_max_tokens``
             keeps the stock input-length check, the
             server's override and the platform limit, but drops the
             ``max_model_len`` clamp: an explicit ``max_tokens`` is honoured,
             an omitted one (and no generation-config default) gets
             ``DEFAULT_SINK_MAX_TOKENS`` or ``$VLLM_SINK_DEFAULT_MAX_TOKENS``;
             ``TokenizeParams`` clamps its (informational) output budget to
             ``max_total_tokens`` instead of raising, and the sink limits
             apply (``request_policy.check_sizes``: max_tokens <= 2**30,
             the prompt <= --sink-max-prompt-tokens, HTTP 400 naming the
             field). Dense requests, on any engine, run the stock functions
             untouched. Prompt lengths are checked per request
             when the prompt is rendered (patch_request_policy).
Upstream:    none: the clamp is correct for every stock cache policy.
Remove when: vLLM asks the KV cache policy for a request's output limit.
Tests:       tests/unit/test_patch_api_max_tokens.py,
             tests/e2e/test_serve_sink.py
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from vllm_sink_plugin import frontend_state
from vllm_sink_plugin.frontend_state import DEFAULT_SINK_MAX_TOKENS
from vllm_sink_plugin.patches._base import wrap_attribute

SOURCE_MODULE = "vllm.entrypoints.serve.utils.api_utils"
# Every module that does ``from api_utils import get_max_tokens`` (the same in
# 0.32.0 and 0.33.0; tests/compat/test_drift.py scans the installed vLLM for more).
ALIAS_MODULES = (
    "vllm.entrypoints.openai.chat_completion.serving",
    "vllm.entrypoints.openai.chat_completion.batch_serving",
    "vllm.entrypoints.openai.completion.serving",
    "vllm.entrypoints.openai.responses.serving",
    "vllm.entrypoints.speech_to_text.base.serving",
    "vllm.entrypoints.scale_out.render.serving",
    "vllm.entrypoints.scale_out.token_in_token_out.serving",
)


def sink_max_tokens(
    max_model_len: int,
    max_tokens: int | None,
    input_length: int,
    default_sampling_params: Mapping[str, Any],
    override_max_tokens: int | None = None,
    truncate_prompt_tokens: int | None = None,
    *,
    platform_max_tokens: int | None = None,
    default_cap: int = DEFAULT_SINK_MAX_TOKENS,
) -> int:
    """``get_max_tokens`` of vLLM 0.32 without the ``max_model_len`` clamp.

    Returns:
        The smallest of the requested count (``max_tokens``, else the
        generation config's, else ``default_cap``), the server's override and
        the platform limit.

    A prompt longer than ``max_model_len`` is not refused here: sink
    requests stream it through, and dense requests were refused when their
    prompt was rendered (``patch_request_policy``).
    """
    if truncate_prompt_tokens is not None:
        limit = (
            max_model_len if truncate_prompt_tokens == -1 else truncate_prompt_tokens
        )
        input_length = min(input_length, limit)
    requested = max_tokens
    if requested is None:
        requested = default_sampling_params.get("max_tokens")
    if requested is None:
        requested = default_cap
    return min(
        v
        for v in (requested, override_max_tokens, platform_max_tokens)
        if v is not None
    )


def _get_max_tokens(original):
    def get_max_tokens(
        max_model_len,
        max_tokens,
        input_length,
        default_sampling_params,
        override_max_tokens=None,
        truncate_prompt_tokens=None,
    ):
        request = frontend_state.current_request()
        policy = None
        if request is not None:
            from vllm_sink_plugin.patches.frontend.patch_request_policy import (
                request_policy,
            )

            policy = request_policy(request, chat=hasattr(request, "messages"))
        if policy is None if request is not None else not frontend_state.sink_served():
            return original(
                max_model_len,
                max_tokens,
                input_length,
                default_sampling_params,
                override_max_tokens,
                truncate_prompt_tokens=truncate_prompt_tokens,
            )
        from vllm.platforms import current_platform

        result = sink_max_tokens(
            max_model_len,
            max_tokens,
            input_length,
            default_sampling_params,
            override_max_tokens,
            truncate_prompt_tokens,
            platform_max_tokens=current_platform.get_max_output_tokens(input_length),
            default_cap=frontend_state.default_cap(),
        )
        if policy is not None:
            from vllm_sink_plugin.request_policy import check_sizes

            check_sizes(
                policy,
                max_tokens=result,
                prompt_len=input_length,
                prompt_logprobs=getattr(request, "prompt_logprobs", None),
            )
        return result

    return get_max_tokens


def _post_init(original):
    def __post_init__(self):
        total = self.max_total_tokens
        lift = frontend_state.lifting_length_limits()
        if lift is None:  # not built for a request: the engine's policy
            lift = frontend_state.sink_served()
        if lift and total is not None and self.max_output_tokens > total:
            # Only the ``== 0`` test (pooling) reads it after validation.
            object.__setattr__(self, "max_output_tokens", total)
        original(self)

    return __post_init__


def _renderer_init(original):
    def __init__(self, config, *args, **kwargs):
        original(self, config, *args, **kwargs)
        cache_config = getattr(config, "cache_config", None)
        model_config = getattr(config, "model_config", None)
        frontend_state.record_policy(
            getattr(config, "additional_config", None),
            block_size=getattr(cache_config, "block_size", None),
            max_model_len=getattr(model_config, "max_model_len", None),
        )

    return __init__


def apply() -> None:
    from vllm.entrypoints.serve.utils import api_utils
    from vllm.renderers.base import BaseRenderer
    from vllm.renderers.params import TokenizeParams

    wrap_attribute(BaseRenderer, "__init__", _renderer_init)
    wrap_attribute(TokenizeParams, "__post_init__", _post_init)
    wrap_attribute(api_utils, "get_max_tokens", _get_max_tokens)
    patched = api_utils.get_max_tokens
    # Modules imported from now on bind the wrapper; rebind those already in.
    for name in ALIAS_MODULES:
        module = sys.modules.get(name)
        if module is not None and module.get_max_tokens is not patched:
            module.get_max_tokens = patched
