# SPDX-License-Identifier: Apache-2.0
"""The OpenAI server reads, checks and applies each request's sink fields.

Target:      vllm.entrypoints.openai.chat_completion.protocol
             .ChatCompletionRequest.{build_tok_params, to_sampling_params};
             vllm.entrypoints.openai.completion.protocol
             .CompletionRequest.{build_tok_params, to_sampling_params};
             vllm.entrypoints.openai.chat_completion.serving
             .OpenAIServingChat.{render_chat_request, create_chat_completion};
             vllm.entrypoints.openai.completion.serving
             .OpenAIServingCompletion.create_completion
Process:     frontend (the API server processes)
vLLM:        0.32.0, 0.33.0 (compat.SUPPORTED_VLLM; verified 0.32.0 CPU;
             0.33.0: drift canaries, tests/compat)
Why:         Per-request settings travel in ``vllm_xargs`` (->
             ``SamplingParams.extra_args``), which vLLM passes on unread; a
             bad value found later, in the engine, would surface as an error
             event inside an HTTP 200 stream. The prompt-length limit
             (``max_model_len``) must hold for dense requests only, and the
             pinned system prompt needs the chat messages, which only the
             chat endpoint sees.
How:         ``build_tok_params`` (the first step of rendering a request)
             folds the plugin's keys given at the top level of
             ``extra_body`` into ``vllm_xargs``, resolves the request's
             policy (``request_policy.resolve``: bad fields raise
             ``VLLMValidationError`` -> HTTP 400 naming the field) and, for a
             sink request, drops the prompt-length limit from its
             ``TokenizeParams`` (and refuses beam search and prompt
             embeddings for it). ``create_completion`` /
             ``create_chat_completion`` make the request known to
             ``get_max_tokens`` (a context variable), so a dense request on
             a sink server keeps every stock length rule and a sink request
             gets the sink limits (patch_api_max_tokens).
             ``render_chat_request`` then turns
             ``pin_system_prompt`` into ``num_sink_tokens`` = the tokens of
             the rendered system message (at least the configured sinks).
             ``to_sampling_params`` checks the final fields once more (a
             pinned prompt may not leave room for the window: HTTP 400).
             Requests on engines without the policy are untouched, except
             that sink fields sent to them are refused with HTTP 400.
Upstream:    none: vLLM has no per-request plugin-parameter API.
Remove when: vLLM validates ``vllm_xargs`` through a plugin hook.
Tests:       tests/e2e/test_serve_sink.py, tests/unit/test_request_policy.py
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vllm_sink_plugin import frontend_state
from vllm_sink_plugin.patches._base import wrap_attribute
from vllm_sink_plugin.request_policy import (
    REQUEST_KEYS,
    SinkRequestError,
    field_name,
    resolve,
)

PIN = "pin_system_prompt"


def fold_extra_body(request: Any) -> dict[str, Any]:
    """Moves the plugin's top-level ``extra_body`` keys into ``vllm_xargs``.

    Returns:
        The request's ``vllm_xargs`` afterwards (also stored on it).

    Raises:
        SinkRequestError: a key is given both ways with different values.
    """
    xargs = dict(request.vllm_xargs or {})
    extra = request.model_extra or {}
    for key in REQUEST_KEYS:
        if key not in extra:
            continue
        value = extra.pop(key)
        if key in xargs and xargs[key] != value:
            raise SinkRequestError(
                f"{field_name(key)} given twice, as {value!r} and "
                f"vllm_xargs {xargs[key]!r}",
                parameter=key,
                value=value,
            )
        xargs[key] = value
    request.vllm_xargs = xargs or None
    return xargs


def request_policy(request: Any, *, chat: bool, again: bool = False):
    """The request's resolved policy (None: dense or no sink engine here).

    Resolved once per request and remembered (``frontend_state``); ``again``
    resolves anew, after the plugin changed the request's fields (pinning).
    """
    if not again:
        found, policy = frontend_state.resolved_policy(request)
        if found:
            return policy
    engine = frontend_state.served_engine()
    if engine is None:
        return None
    config, block_size, max_model_len = engine
    xargs = fold_extra_body(request)
    policy = resolve(config, xargs, block_size=block_size, max_model_len=max_model_len)
    if not chat and PIN in xargs and policy is not None and policy.pin_system_prompt:
        raise SinkRequestError(
            f"{field_name(PIN)} applies to chat requests (their system "
            "message); a completion pins its first N tokens with "
            "num_sink_tokens=N",
            parameter=PIN,
            value=xargs[PIN],
        )
    frontend_state.remember_policy(request, policy)
    return policy


def check_request_features(request: Any) -> None:
    """Refuses request features a sink request cannot run, naming the field.

    Raises:
        SinkRequestError: beam search (it re-prefills each beam's whole
            history, which a sink request no longer has) or prompt
            embeddings (evictions work on token positions).
    """
    if getattr(request, "use_beam_search", False):
        raise SinkRequestError(
            "use_beam_search: beam search re-runs each beam's whole history, "
            "which a sink request evicts; use sampling (n > 1 works) or "
            "kv_policy 'none' for this request",
            parameter="use_beam_search",
            value=True,
        )
    if getattr(request, "prompt_embeds", None) is not None:
        raise SinkRequestError(
            "prompt_embeds: a sink request needs a prompt of token ids "
            "(evictions work on token positions); send kv_policy 'none' for "
            "this request",
            parameter="prompt_embeds",
        )


def _build_tok_params(chat: bool):
    def make(original):
        def build_tok_params(self, model_config):
            policy = request_policy(self, chat=chat)
            if policy is not None:
                check_request_features(self)
            with frontend_state.lifting(policy is not None):
                params = original(self, model_config)
            if policy is None:
                return params
            # Sink requests stream prompts of any length through the cache
            # (their own limit is checked with the prompt's length).
            return dataclasses.replace(params, max_total_tokens=None)

        return build_tok_params

    return make


async def restore_raw_xargs(request: Any, raw_request: Any) -> None:
    """Puts back the JSON values of the plugin's keys in ``vllm_xargs``.

    vLLM's model types ``vllm_xargs`` as ``dict[str, str | int | float |
    list]``, and pydantic turns ``true`` into ``1`` there; the resolver must
    see the value the client sent, so that ``true`` for an integer field is
    refused wherever it arrives (top level or ``vllm_xargs``). Only requests
    that carry a plugin key in ``vllm_xargs`` pay for reading the body
    (Starlette has cached it: FastAPI read it to build ``request``).
    """
    xargs = request.vllm_xargs
    if not xargs or raw_request is None or not set(REQUEST_KEYS).intersection(xargs):
        return
    try:
        sent = (await raw_request.json()).get("vllm_xargs")
    except Exception:  # not a JSON object body: keep pydantic's values
        return
    if not isinstance(sent, dict):
        return
    request.vllm_xargs = {
        key: sent[key] if key in REQUEST_KEYS and key in sent else value
        for key, value in xargs.items()
    }


def _serving(original):
    async def serve(self, request, raw_request=None, *args, **kwargs):
        await restore_raw_xargs(request, raw_request)
        # vLLM's request-blind helpers (get_max_tokens) read it.
        with frontend_state.serving(request):
            return await original(self, request, raw_request, *args, **kwargs)

    return serve


def _to_sampling_params(chat: bool):
    def make(original):
        def to_sampling_params(self, *args, **kwargs):
            request_policy(self, chat=chat)
            return original(self, *args, **kwargs)

        return to_sampling_params

    return make


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def system_prompt_length(tokenizer, messages, prompt_token_ids, chat_template=None):
    """Tokens of ``prompt_token_ids`` that render the leading system message.

    The system message is rendered alone with the same chat template; the
    answer is its common prefix with the full prompt (0 without one).
    """
    if not messages:
        return 0
    first = messages[0]
    first = dict(first if isinstance(first, dict) else first.model_dump())
    if first.get("role") not in ("system", "developer"):
        return 0
    content = first.get("content")
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        first["content"] = "".join(
            part.get("text", "") for part in content if isinstance(part, dict)
        )
    text = tokenizer.apply_chat_template(
        [first],
        tokenize=False,
        add_generation_prompt=False,
        chat_template=chat_template,
    )
    alone = tokenizer.encode(text, add_special_tokens=False)
    return common_prefix_length(alone, list(prompt_token_ids))


def _render_chat_request(original):
    async def render_chat_request(self, request, *args, **kwargs):
        result = await original(self, request, *args, **kwargs)
        if isinstance(result, tuple):
            policy = request_policy(request, chat=True)
            if policy is not None and policy.pin_system_prompt:
                _, engine_inputs = result
                pinned = system_prompt_length(
                    self.renderer.tokenizer,
                    request.messages,
                    engine_inputs[0].get("prompt_token_ids") or [],
                    request.chat_template,
                )
                xargs = dict(request.vllm_xargs or {})
                xargs.pop(PIN, None)
                xargs["num_sink_tokens"] = max(policy.num_sink_tokens, pinned)
                request.vllm_xargs = xargs
                try:
                    request_policy(request, chat=True, again=True)
                except SinkRequestError as error:
                    raise SinkRequestError(
                        f"{field_name(PIN)}: the system prompt is {pinned} "
                        f"tokens, too many to pin: {error}",
                        parameter=PIN,
                        value=pinned,
                    ) from None
        return result

    return render_chat_request


def apply() -> None:
    from vllm.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionRequest,
    )
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.openai.completion.serving import OpenAIServingCompletion

    for cls, chat in ((ChatCompletionRequest, True), (CompletionRequest, False)):
        wrap_attribute(cls, "build_tok_params", _build_tok_params(chat))
        wrap_attribute(cls, "to_sampling_params", _to_sampling_params(chat))
    wrap_attribute(OpenAIServingChat, "render_chat_request", _render_chat_request)
    wrap_attribute(OpenAIServingChat, "create_chat_completion", _serving)
    wrap_attribute(OpenAIServingCompletion, "create_completion", _serving)
