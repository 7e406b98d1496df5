# SPDX-License-Identifier: Apache-2.0
"""The configuration surface: defaults, merging, and named errors."""

import argparse

import pytest

from vllm_sink_plugin.config import (
    FLAGS,
    StreamingSinkConfig,
    StreamingSinkConfigError,
)
from vllm_sink_plugin.patches.frontend.patch_arg_utils import (
    add_sink_arguments,
    merge_cli_into_additional_config,
)


def test_defaults_are_stock_vllm():
    config = StreamingSinkConfig.from_mapping(None)
    assert not config.enabled
    assert (config.num_sink_tokens, config.sink_window) == (4, 1020)


def test_other_plugins_keys_pass_through():
    config = StreamingSinkConfig.from_mapping(
        {"kv_policy": "sink", "sink_window": 64, "someone_else": 1}
    )
    assert config.enabled and config.sink_window == 64


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"kv_policy": "lru"}, "--kv-policy (additional_config['kv_policy'])"),
        ({"kv_policy": "sink", "num_sink_tokens": -1}, "--num-sink-tokens"),
        ({"kv_policy": "sink", "sink_window": -8}, "--sink-window"),
        ({"kv_policy": "sink", "sink_window": 0}, "--sink-window"),
        ({"kv_policy": "sink", "sink_window": "big"}, "--sink-window"),
        ({"kv_policy": "sink", "num_sink_tokens": 2.5}, "--num-sink-tokens"),
        (
            {"kv_policy": "sink", "num_sink_tokens": 64, "sink_window": 64},
            "sinks < window",
        ),
        ({"sink_window": 64}, "add --kv-policy sink"),
        ({"kv_policy": "sink", "sink_exact_tokens": "yes"}, "--sink-exact-tokens"),
    ],
)
def test_bad_values_name_the_flag(raw, needle):
    with pytest.raises(StreamingSinkConfigError) as err:
        StreamingSinkConfig.from_mapping(raw)
    assert needle in str(err.value)


def test_window_smaller_than_a_block():
    config = StreamingSinkConfig.from_mapping(
        {"kv_policy": "sink", "num_sink_tokens": 4, "sink_window": 8}
    )
    with pytest.raises(
        StreamingSinkConfigError,
        match=r"--sink-window.*>= the KV "
        r"block size \(16\)",
    ):
        config.check_engine(block_size=16, max_model_len=4096)


def test_cache_must_fit_max_model_len():
    config = StreamingSinkConfig.from_mapping(
        {"kv_policy": "sink", "num_sink_tokens": 4, "sink_window": 1020}
    )
    config.check_engine(block_size=16, max_model_len=1043)
    with pytest.raises(StreamingSinkConfigError, match=r"--sink-window.*<= 1008"):
        config.check_engine(block_size=16, max_model_len=1042)


def test_block_rounding():
    config = StreamingSinkConfig(kv_policy="sink", num_sink_tokens=4, sink_window=40)
    assert config.num_sink_blocks(16) == 1
    assert config.num_window_blocks(16) == 3
    assert (
        StreamingSinkConfig(kv_policy="sink", num_sink_tokens=0).num_sink_blocks(16)
        == 0
    )


def test_exact_tokens_mask_the_rest_of_the_sink_block():
    exact = StreamingSinkConfig(
        kv_policy="sink", num_sink_tokens=4, sink_window=64, sink_exact_tokens=True
    )
    assert exact.num_masked_sink_slots(16) == 12
    assert exact.num_masked_sink_slots(4) == 0
    rounded = StreamingSinkConfig(kv_policy="sink", num_sink_tokens=4, sink_window=64)
    assert rounded.num_masked_sink_slots(16) == 0


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_sink_arguments(parser)
    return parser.parse_args(argv)


def test_cli_flags_fold_into_additional_config():
    args = _parse(["--kv-policy", "sink", "--sink-window", "252"])
    merged = merge_cli_into_additional_config(args, {"other": True})
    assert merged == {"other": True, "kv_policy": "sink", "sink_window": 252}


def test_absent_flags_leave_additional_config_alone():
    assert merge_cli_into_additional_config(_parse([]), None) == {}


def test_cli_and_additional_config_must_agree():
    args = _parse(["--sink-window", "252"])
    with pytest.raises(StreamingSinkConfigError, match="--sink-window=252"):
        merge_cli_into_additional_config(args, {"sink_window": 128})


def test_unknown_policy_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        _parse(["--kv-policy", "lru"])
    assert "--kv-policy" in capsys.readouterr().err


def test_every_setting_is_a_cli_flag():
    """Each documented flag parses and lands under its additional_config key."""
    values = {
        "kv_policy": ["sink"],
        "num_sink_tokens": ["8"],
        "sink_window": ["252"],
        "sink_prefill_chunk": ["32"],
        "sink_request_default": ["none"],
        "pin_system_prompt": [],
        "sink_exact_tokens": [],
        "sink_max_prompt_tokens": ["4096"],
    }
    assert set(values) == set(FLAGS)
    argv = [arg for key, flag in FLAGS.items() for arg in [flag, *values[key]]]
    merged = merge_cli_into_additional_config(_parse(argv), None)
    assert merged == {
        "kv_policy": "sink",
        "num_sink_tokens": 8,
        "sink_window": 252,
        "sink_prefill_chunk": 32,
        "sink_request_default": "none",
        "pin_system_prompt": True,
        "sink_exact_tokens": True,
        "sink_max_prompt_tokens": 4096,
    }
    config = StreamingSinkConfig.from_mapping(merged)
    assert config.pin_system_prompt and config.sink_exact_tokens
    assert config.sink_max_prompt_tokens == 4096
