# SPDX-License-Identifier: Apache-2.0
"""What the frontend process knows about its engine and the request in hand.

vLLM's OpenAI layer calls request-blind helpers (``get_max_tokens``,
``TokenizeParams``) from deep inside a request; the frontend patches share
two kinds of state through this module, and only through it:

- **the served engine**, recorded when vLLM builds its renderer: its policy,
  block size and ``max_model_len`` (:func:`record_policy`,
  :func:`served_engine`, :func:`sink_served`) and the output cap of sink
  requests without ``max_tokens`` (:func:`default_cap`);
- **the request in hand**: the OpenAI request an endpoint is serving in this
  asyncio task (:func:`serving`, :func:`current_request`), its policy once
  resolved (:func:`remember_policy`, :func:`resolved_policy`: resolved once,
  then carried to every later stage) and, while its ``TokenizeParams`` are
  built, whether its length limits are lifted (:func:`lifting`,
  :func:`lifting_length_limits`)::

      create_chat_completion(request)        serving(request)
        build_tok_params                       resolve, remember_policy;
                                               lifting(sink?)
          TokenizeParams.__post_init__           lifting_length_limits()
        render_chat_request (pinning)          resolve again, remember_policy
        get_max_tokens(...)                    resolved_policy(current_request())
        to_sampling_params                     resolved_policy
        InputProcessor.process_inputs          resolved_policy

The engine core resolves the policy once more from ``SamplingParams.extra_args``
when the request arrives: it is another process and trusts no client.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from vllm_sink_plugin.config import (
    SINK_MAX_TOKENS_LIMIT,
    StreamingSinkConfig,
    StreamingSinkConfigError,
)

# Output cap of a sink request that gives no max_tokens (stock: the space left
# in max_model_len, which a sink request does not have).
DEFAULT_SINK_MAX_TOKENS = 4096
DEFAULT_MAX_TOKENS_ENV = "VLLM_SINK_DEFAULT_MAX_TOKENS"

# Policies of the engines whose renderers this process built; the lift
# applies only while all of them are sink (a process serves one engine).
_policies: set[bool] = set()
_default_cap = DEFAULT_SINK_MAX_TOKENS
# (policy, block size, max_model_len) of the last engine recorded.
_engine: tuple[StreamingSinkConfig, int, int] | None = None

# The request an OpenAI endpoint is serving in this task.
_current_request: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "sink_current_request", default=None
)
# Policies resolved for the requests in hand: id(request) -> policy or None.
_resolved: contextvars.ContextVar[dict[int, Any] | None] = contextvars.ContextVar(
    "sink_resolved_policies", default=None
)
# Set while build_tok_params builds a request's TokenizeParams (sync).
_lift = threading.local()


def default_max_tokens(environ: Mapping[str, str] = os.environ) -> int:
    """The output cap of a sink request without ``max_tokens``.

    Raises:
        StreamingSinkConfigError: the environment variable is not an int in
            ``[1, SINK_MAX_TOKENS_LIMIT]``.
    """
    raw = environ.get(DEFAULT_MAX_TOKENS_ENV)
    if raw is None or raw == "":
        return DEFAULT_SINK_MAX_TOKENS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= SINK_MAX_TOKENS_LIMIT:
        raise StreamingSinkConfigError(
            f"${DEFAULT_MAX_TOKENS_ENV} must be an integer in [1, "
            f"{SINK_MAX_TOKENS_LIMIT}], got {raw!r}"
        )
    return value


def record_policy(
    additional_config: Mapping[str, Any] | None,
    *,
    block_size: int | None = None,
    max_model_len: int | None = None,
) -> bool:
    """Notes the policy of an engine this process serves; True if sink."""
    global _default_cap, _engine
    config = StreamingSinkConfig.from_mapping(additional_config)
    if config.enabled:
        _default_cap = default_max_tokens()
    if block_size is not None and max_model_len is not None:
        _engine = (config, block_size, max_model_len)
    _policies.add(config.enabled)
    return config.enabled


def served_engine() -> tuple[StreamingSinkConfig, int, int] | None:
    """(policy, block size, max_model_len) of the engine this process serves."""
    return _engine


def default_cap() -> int:
    """The output cap applied to sink requests without ``max_tokens``."""
    return _default_cap


def sink_served() -> bool:
    """True while every engine this process serves has the sink policy."""
    return _policies == {True}


@contextlib.contextmanager
def serving(request: Any) -> Iterator[None]:
    """Marks ``request`` as the one this task serves, for the duration."""
    token = _current_request.set(request)
    resolved = _resolved.set({})
    try:
        yield
    finally:
        _resolved.reset(resolved)
        _current_request.reset(token)


def current_request() -> Any:
    """The OpenAI request being served in this task, or None."""
    return _current_request.get()


def remember_policy(request: Any, policy: Any) -> None:
    """Keeps the resolved policy (None: dense) of a request in hand."""
    cache = _resolved.get()
    if cache is not None:
        cache[id(request)] = policy


def resolved_policy(request: Any) -> tuple[bool, Any]:
    """``(True, policy)`` if ``request``'s policy was resolved in this task."""
    cache = _resolved.get()
    if request is None or cache is None or id(request) not in cache:
        return False, None
    return True, cache[id(request)]


@contextlib.contextmanager
def lifting(sink: bool) -> Iterator[None]:
    """While a request's ``TokenizeParams`` are built: sink (True) or dense."""
    _lift.on = sink
    try:
        yield
    finally:
        _lift.on = None


def lifting_length_limits() -> bool | None:
    """True/False inside ``build_tok_params`` (sink/dense request), else None."""
    return getattr(_lift, "on", None)
