# SPDX-License-Identifier: Apache-2.0
"""``LLM`` / ``AsyncLLM`` accept sink requests whose prompt outgrows the cache.

Target:      vllm.v1.engine.input_processor.InputProcessor.{process_inputs,
             _validate_prompt_len, _validate_model_input};
             vllm.renderers.base.BaseRenderer.{default_cmpl_tok_params,
             default_chat_tok_params} (cached properties)
Process:     frontend (wherever an LLM, LLMEngine or AsyncLLM runs)
vLLM:        0.32.0, 0.33.0 (compat.SUPPORTED_VLLM; verified 0.32.0 CPU;
             0.32.0 and 0.33.0 CUDA, H100: tests/gpu)
Why:         The renderer (``LLM.generate``/``chat`` tokenize with its
             default ``TokenizeParams``) and ``process_inputs`` refuse
             prompts longer than max_model_len, and ``process_inputs``
             fills an omitted ``max_tokens`` with ``max_model_len -
             prompt_len``; a sink request streams any prompt through its
             cache and has no such limit. It is also the one place every
             entry point passes, so the request's sink fields are checked
             here before they reach the engine core.
How:         On a sink engine the renderer's default ``TokenizeParams`` carry
             no total-length limit (it cannot know the request's policy);
             ``process_inputs`` resolves the request's policy
             (``request_policy.resolve``; bad fields raise
             ``VLLMValidationError``). For a sink request it gives an omitted
             ``max_tokens`` the documented default cap (on a copy of the
             params) and, for the duration of the call, lets
             ``_validate_prompt_len`` apply the sink limits instead of its
             max_model_len test (``request_policy.check_sizes``: max_tokens,
             prompt tokens x (prompt_logprobs + 1); empty prompts are still
             refused), and ``_validate_model_input`` refuse prompt embeddings
             and multimodal inputs. Dense requests run the stock code, so
             their prompt limit still holds there.
Upstream:    none: the limit is right for every stock cache policy.
Remove when: vLLM asks the KV cache policy for a request's length limit.
Tests:       tests/e2e/test_sink_scheduling.py, tests/e2e/test_serve_sink.py
"""

from __future__ import annotations

import dataclasses
import threading

from vllm_sink_plugin import frontend_state
from vllm_sink_plugin.config import StreamingSinkConfig
from vllm_sink_plugin.patches._base import wrap_attribute
from vllm_sink_plugin.request_policy import (
    SinkRequestError,
    check_sizes,
    field_name,
    resolve,
)

_state = threading.local()


def _policy_of(processor, params):
    from vllm.sampling_params import SamplingParams

    if not isinstance(params, SamplingParams):
        return None
    # Resolved by the OpenAI layer for the request this task serves.
    found, policy = frontend_state.resolved_policy(frontend_state.current_request())
    if found:
        return policy
    config = processor.vllm_config
    extra_args = params.extra_args
    if extra_args and extra_args.get("pin_system_prompt"):
        raise SinkRequestError(
            f"{field_name('pin_system_prompt')} is applied by the OpenAI chat "
            "endpoint; elsewhere pass num_sink_tokens=<tokens to keep>",
            parameter="pin_system_prompt",
        )
    return resolve(
        StreamingSinkConfig.from_mapping(config.additional_config),
        extra_args,
        block_size=config.cache_config.block_size,
        max_model_len=config.model_config.max_model_len,
    )


def _process_inputs(original):
    def process_inputs(self, request_id, prompt, params, *args, **kwargs):
        policy = _policy_of(self, params)
        if policy is None:
            return original(self, request_id, prompt, params, *args, **kwargs)
        if params.max_tokens is None:
            params = params.clone()
            params.max_tokens = frontend_state.default_cap()
        check_sizes(policy, max_tokens=params.max_tokens, prompt_len=None)
        _state.sink = (policy, params.prompt_logprobs)
        try:
            return original(self, request_id, prompt, params, *args, **kwargs)
        finally:
            _state.sink = None

    return process_inputs


def _validate_prompt_len(original):
    def validate_prompt_len(self, prompt_len, prompt_type):
        sink = getattr(_state, "sink", None)
        if sink is not None and prompt_type == "decoder" and prompt_len:
            policy, prompt_logprobs = sink
            check_sizes(
                policy,
                max_tokens=None,
                prompt_len=prompt_len,
                prompt_logprobs=prompt_logprobs,
            )
            return None
        return original(self, prompt_len, prompt_type)

    return validate_prompt_len


def _validate_model_input(original):
    def validate_model_input(self, prompt_input, prompt_type, *args, **kwargs):
        kind = prompt_input.get("type")
        if getattr(_state, "sink", None) is not None and kind in (
            "embeds",
            "multimodal",
        ):
            field = "prompt_embeds" if kind == "embeds" else "multi_modal_data"
            raise SinkRequestError(
                f"{field}: a sink request needs a prompt of token ids (evictions "
                "work on token positions); send kv_policy 'none' for this request",
                parameter=field,
            )
        return original(self, prompt_input, prompt_type, *args, **kwargs)

    return validate_model_input


def _tok_params(original):
    def tok_params(self):
        params = original(self)
        config = StreamingSinkConfig.from_mapping(self.config.additional_config)
        if config.enabled and params.max_total_tokens is not None:
            params = dataclasses.replace(params, max_total_tokens=None)
        return params

    return tok_params


def apply() -> None:
    from vllm.renderers.base import BaseRenderer
    from vllm.v1.engine.input_processor import InputProcessor

    for name in ("default_cmpl_tok_params", "default_chat_tok_params"):
        wrap_attribute(BaseRenderer, name, _tok_params, kind="cached_property")

    wrap_attribute(InputProcessor, "process_inputs", _process_inputs)
    wrap_attribute(InputProcessor, "_validate_prompt_len", _validate_prompt_len)
    wrap_attribute(InputProcessor, "_validate_model_input", _validate_model_input)
