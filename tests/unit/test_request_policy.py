# SPDX-License-Identifier: Apache-2.0
"""Per-request sink fields: precedence over the server flags, and the errors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_sink_plugin.config import StreamingSinkConfig
from vllm_sink_plugin.request_policy import REQUEST_KEYS, SinkRequestError, resolve

SINK = StreamingSinkConfig.from_mapping(
    {"kv_policy": "sink", "num_sink_tokens": 4, "sink_window": 256}
)
OPT_IN = StreamingSinkConfig.from_mapping(
    {"kv_policy": "sink", "sink_window": 256, "sink_request_default": "none"}
)
NONE = StreamingSinkConfig.from_mapping(None)


def _resolve(engine, extra):
    return resolve(engine, extra, block_size=32, max_model_len=1024)


def test_server_flags_are_the_defaults():
    got = _resolve(SINK, None)
    assert (got.num_sink_tokens, got.sink_window) == (4, 256)
    assert _resolve(NONE, None) is None
    assert _resolve(NONE, {"kv_policy": "none", "other_plugin": 1}) is None


def test_request_fields_override_the_server():
    got = _resolve(SINK, {"num_sink_tokens": 40, "sink_window": 512})
    assert (got.num_sink_tokens, got.sink_window) == (40, 512)
    assert _resolve(SINK, {"kv_policy": "none"}) is None
    assert _resolve(OPT_IN, None) is None
    assert _resolve(OPT_IN, {"kv_policy": "sink"}).sink_window == 256


@pytest.mark.parametrize(
    ("engine", "extra", "field", "match"),
    [
        (SINK, {"kv_policy": "window"}, "kv_policy", "must be one of"),
        (SINK, {"kv_policy": 3}, "kv_policy", "must be one of"),
        (SINK, {"num_sink_tokens": -1}, "num_sink_tokens", ">= 0"),
        (SINK, {"num_sink_tokens": "4"}, "num_sink_tokens", "integer"),
        (SINK, {"num_sink_tokens": 4.5}, "num_sink_tokens", "integer"),
        (SINK, {"sink_window": 0}, "sink_window", ">= 1"),
        (SINK, {"num_sink_tokens": 300}, "num_sink_tokens", "sinks < window"),
        (SINK, {"sink_window": 16}, "sink_window", "block size"),
        (SINK, {"sink_window": 4000}, "sink_window", "must be <= 960"),
        (SINK, {"pin_system_prompt": "yes"}, "pin_system_prompt", "true or false"),
        (SINK, {"kv_policy": "none", "sink_window": 64}, "sink_window", "'none'"),
        (NONE, {"kv_policy": "sink"}, "kv_policy", "--kv-policy none"),
        (NONE, {"sink_window": 64}, "sink_window", "--kv-policy none"),
    ],
)
def test_bad_fields_name_the_field(engine, extra, field, match):
    with pytest.raises(SinkRequestError, match=match) as info:
        _resolve(engine, extra)
    assert info.value.parameter == field
    assert f"'{field}'" in str(info.value)


def test_booleans_may_arrive_as_numbers():
    assert _resolve(SINK, {"pin_system_prompt": 1}).pin_system_prompt
    assert not _resolve(SINK, {"pin_system_prompt": False}).pin_system_prompt


# -- sizes a sink request may have -------------------------------------------


def test_max_tokens_is_bounded():
    from vllm_sink_plugin.config import SINK_MAX_TOKENS_LIMIT
    from vllm_sink_plugin.request_policy import check_sizes

    policy = _resolve(SINK, None)
    check_sizes(policy, max_tokens=SINK_MAX_TOKENS_LIMIT, prompt_len=10)
    with pytest.raises(SinkRequestError, match="max_tokens=2147483647") as info:
        check_sizes(policy, max_tokens=2**31 - 1, prompt_len=10)
    assert info.value.parameter == "max_tokens"
    assert str(SINK_MAX_TOKENS_LIMIT) in str(info.value)


def test_prompt_is_bounded_and_prompt_logprobs_divide_the_bound():
    from vllm_sink_plugin.request_policy import check_sizes

    engine = StreamingSinkConfig.from_mapping(
        {"kv_policy": "sink", "sink_window": 256, "sink_max_prompt_tokens": 1000}
    )
    policy = _resolve(engine, None)
    assert policy.sink_max_prompt_tokens == 1000
    check_sizes(policy, max_tokens=None, prompt_len=1000)
    with pytest.raises(SinkRequestError, match="--sink-max-prompt-tokens") as info:
        check_sizes(policy, max_tokens=None, prompt_len=1001)
    assert info.value.parameter == "prompt"
    check_sizes(policy, max_tokens=None, prompt_len=250, prompt_logprobs=3)
    with pytest.raises(SinkRequestError, match="at most 250") as info:
        check_sizes(policy, max_tokens=None, prompt_len=251, prompt_logprobs=3)
    assert info.value.parameter == "prompt_logprobs"


@pytest.mark.parametrize(
    "raw",
    [
        {"sink_max_prompt_tokens": 0},
        {"sink_max_prompt_tokens": True},
        {"sink_max_prompt_tokens": 2**40},
        {"sink_window": 2**40},
    ],
)
def test_engine_sizes_are_bounded(raw):
    from vllm_sink_plugin.config import StreamingSinkConfigError

    with pytest.raises(StreamingSinkConfigError, match="additional_config"):
        StreamingSinkConfig.from_mapping({"kv_policy": "sink", **raw})


# -- property: the resolver returns a policy or raises SinkRequestError ------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["sink", "none", "window", "", "SINK"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
_FIELDS = st.dictionaries(
    st.sampled_from([*REQUEST_KEYS, "other_plugin", "max_tokens"]), _JSON, max_size=5
)


@settings(max_examples=400, deadline=None)
@given(
    engine=st.sampled_from([SINK, OPT_IN, NONE]),
    extra=st.none() | _FIELDS,
    block_size=st.sampled_from([16, 32]),
    max_model_len=st.integers(min_value=1, max_value=1 << 20),
)
def test_resolver_returns_a_policy_or_the_documented_error(
    engine, extra, block_size, max_model_len
):
    try:
        got = resolve(engine, extra, block_size=block_size, max_model_len=max_model_len)
    except SinkRequestError as error:
        # The documented error: an HTTP 400 naming one of the plugin's fields.
        assert error.parameter in REQUEST_KEYS
        assert f"'{error.parameter}'" in str(error)
        return
    if got is None:
        return
    # A policy that runs: types and the engine's geometry hold.
    assert got.enabled
    assert type(got.num_sink_tokens) is int and got.num_sink_tokens >= 0
    assert type(got.sink_window) is int and got.sink_window >= block_size
    assert got.num_sink_tokens < got.sink_window
    cache = (
        got.num_sink_blocks(block_size) + got.num_window_blocks(block_size)
    ) * block_size
    assert cache <= max_model_len - 3
    assert type(got.pin_system_prompt) is bool


@settings(max_examples=200, deadline=None)
@given(
    max_tokens=st.none() | st.integers(min_value=1, max_value=2**64),
    prompt_len=st.none() | st.integers(min_value=1, max_value=2**40),
    prompt_logprobs=st.none() | st.integers(min_value=-1, max_value=100),
)
def test_size_checks_pass_or_name_the_field(max_tokens, prompt_len, prompt_logprobs):
    from vllm_sink_plugin.config import SINK_MAX_TOKENS_LIMIT
    from vllm_sink_plugin.request_policy import check_sizes

    policy = _resolve(SINK, None)
    try:
        check_sizes(
            policy,
            max_tokens=max_tokens,
            prompt_len=prompt_len,
            prompt_logprobs=prompt_logprobs,
        )
    except SinkRequestError as error:
        assert error.parameter in ("max_tokens", "prompt", "prompt_logprobs")
        return
    assert max_tokens is None or max_tokens <= SINK_MAX_TOKENS_LIMIT
    assert prompt_logprobs is None or prompt_logprobs >= 0
    rows = (prompt_logprobs or 0) + 1
    assert prompt_len is None or prompt_len * rows <= policy.sink_max_prompt_tokens
