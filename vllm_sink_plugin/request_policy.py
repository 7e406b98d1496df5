# SPDX-License-Identifier: Apache-2.0
"""The policy of one request: server flags overridden by request fields.

A request names its policy in ``SamplingParams.extra_args`` (the OpenAI
server fills it from ``vllm_xargs``, or from the same keys given at the top
level of ``extra_body``)::

    extra_body={"kv_policy": "sink", "num_sink_tokens": 8, "sink_window": 512}

Precedence, per key: the request's value, else the server's flag, else the
built-in default. ``kv_policy`` defaults to ``--sink-request-default`` (so a
server started with ``--kv-policy sink --sink-request-default none`` runs
requests dense unless they opt in). A server started with ``--kv-policy
none`` is stock vLLM: its KV cache holds rotated keys, so a request asking
for the sink policy there is refused, never silently run dense.

The same function decides in the API server (HTTP 400 on a bad field), in
``LLM``/``AsyncLLM`` (``InputProcessor``) and in the engine core (which
window the scheduler rolls), so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vllm.exceptions import VLLMValidationError

from vllm_sink_plugin.config import (
    SINK_MAX_TOKENS_LIMIT,
    StreamingSinkConfig,
    StreamingSinkConfigError,
    check_bool,
    check_int,
    check_policy,
)

REQUEST_KEYS = ("kv_policy", "num_sink_tokens", "sink_window", "pin_system_prompt")


class SinkRequestError(VLLMValidationError):
    """A bad per-request sink field; the server answers HTTP 400."""


def field_name(key: str) -> str:
    return f"request field '{key}' (extra_body / vllm_xargs)"


def sink_fields(extra_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The plugin's keys present in a request's ``extra_args``."""
    return {k: v for k, v in (extra_args or {}).items() if k in REQUEST_KEYS}


def resolve(
    engine: StreamingSinkConfig,
    extra_args: Mapping[str, Any] | None,
    *,
    block_size: int,
    max_model_len: int,
) -> StreamingSinkConfig | None:
    """The effective policy of one request; None when it runs dense.

    Args:
        engine: the engine's policy (the server flags).
        extra_args: the request's ``SamplingParams.extra_args``.
        block_size: the engine's KV block size.
        max_model_len: the engine's max_model_len.

    Raises:
        SinkRequestError: a field has a bad type or value, the request asks
            for the policy on a server without it, or its cache does not fit.
    """
    fields = sink_fields(extra_args)
    key = "kv_policy"
    try:
        default = engine.sink_request_default if engine.enabled else "none"
        policy = check_policy(key, fields.get(key, default), field_name)
        if not engine.enabled:
            if policy == "sink" or set(fields) - {key}:
                key = next(iter(set(fields) - {"kv_policy"}), "kv_policy")
                raise StreamingSinkConfigError(
                    f"{field_name(key)}: this server runs --kv-policy none (stock "
                    "vLLM, rotated keys in its KV cache), so per-request sink "
                    "settings cannot apply; start it with --kv-policy sink "
                    "(add --sink-request-default none to make the policy opt-in)"
                )
            return None
        if policy == "none":
            extra = sorted(set(fields) - {"kv_policy"})
            if extra:
                key = extra[0]
                raise StreamingSinkConfigError(
                    f"{', '.join(map(field_name, extra))} given with "
                    "kv_policy 'none'; drop them or use kv_policy 'sink'"
                )
            return None
        key = "num_sink_tokens"
        num_sink_tokens = check_int(
            key, fields.get(key, engine.num_sink_tokens), 0, field_name
        )
        key = "sink_window"
        sink_window = check_int(key, fields.get(key, engine.sink_window), 1, field_name)
        key = "pin_system_prompt"
        pin = check_bool(key, fields.get(key, engine.pin_system_prompt), field_name)
        config = StreamingSinkConfig(
            kv_policy="sink",
            num_sink_tokens=num_sink_tokens,
            sink_window=sink_window,
            sink_prefill_chunk=engine.sink_prefill_chunk,
            pin_system_prompt=pin,
            sink_exact_tokens=engine.sink_exact_tokens,
            sink_max_prompt_tokens=engine.sink_max_prompt_tokens,
        )
        key = "num_sink_tokens" if "num_sink_tokens" in fields else "sink_window"
        config.check_sinks_below_window(field_name)
        key = "sink_window"
        config.check_engine(
            block_size=block_size, max_model_len=max_model_len, name=field_name
        )
    except StreamingSinkConfigError as error:
        raise SinkRequestError(
            str(error), parameter=key, value=fields.get(key)
        ) from None
    return config


def check_sizes(
    policy: StreamingSinkConfig,
    *,
    max_tokens: int | None,
    prompt_len: int | None,
    prompt_logprobs: int | None = None,
) -> None:
    """Refuses a sink request whose output or prompt has no bound in memory.

    ``max_model_len`` does not limit a sink request, so these do:
    ``max_tokens <= SINK_MAX_TOKENS_LIMIT`` (Model Runner V2 keeps
    ``prompt_len + max_tokens`` in int32) and ``prompt_len * (prompt_logprobs
    + 1) <= sink_max_prompt_tokens`` (the prompt, and the logprob rows the
    worker and the frontend keep for it).

    Raises:
        SinkRequestError: naming ``max_tokens``, ``prompt`` or
            ``prompt_logprobs`` and the limit.
    """
    if max_tokens is not None and max_tokens > SINK_MAX_TOKENS_LIMIT:
        raise SinkRequestError(
            f"max_tokens={max_tokens} is more than a sink request may generate "
            f"({SINK_MAX_TOKENS_LIMIT}); ask for at most that many and send a "
            "new request to go on",
            parameter="max_tokens",
            value=max_tokens,
        )
    if prompt_logprobs is not None and prompt_logprobs < 0:
        raise SinkRequestError(
            f"prompt_logprobs={prompt_logprobs} (the whole vocabulary for every "
            "prompt token) has no memory bound over a streamed prompt; ask for "
            "at most max_logprobs",
            parameter="prompt_logprobs",
            value=prompt_logprobs,
        )
    if prompt_len is None:
        return
    rows = (prompt_logprobs or 0) + 1
    limit = policy.sink_max_prompt_tokens // rows
    if prompt_len > limit:
        field = "prompt_logprobs" if rows > 1 else "prompt"
        with_logprobs = f" with prompt_logprobs={prompt_logprobs}" if rows > 1 else ""
        raise SinkRequestError(
            f"the prompt has {prompt_len} tokens; a sink request may have at most "
            f"{limit}{with_logprobs} (--sink-max-prompt-tokens "
            f"{policy.sink_max_prompt_tokens}"
            + (" / (prompt_logprobs + 1)" if rows > 1 else "")
            + ")",
            parameter=field,
            value=prompt_len,
        )
