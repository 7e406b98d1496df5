# SPDX-License-Identifier: Apache-2.0
"""Per-request sink fields: precedence over the server flags, and the errors."""

import pytest

from vllm_sink_plugin.config import StreamingSinkConfig
from vllm_sink_plugin.request_policy import SinkRequestError, resolve

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
