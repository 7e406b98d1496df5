# SPDX-License-Identifier: Apache-2.0
"""The server's max_tokens clamp: stock for other engines, lifted for sink."""

import importlib
import re
from pathlib import Path

import pytest

from vllm_sink_plugin import frontend_state as state
from vllm_sink_plugin.config import StreamingSinkConfigError
from vllm_sink_plugin.patches._base import original_of
from vllm_sink_plugin.patches.frontend import patch_api_max_tokens as patch


@pytest.fixture
def policies(monkeypatch):
    """A fresh per-process policy record, restored afterwards."""
    patch.apply()
    monkeypatch.setattr(state, "_policies", set())
    monkeypatch.setattr(state, "_default_cap", state.DEFAULT_SINK_MAX_TOKENS)
    monkeypatch.setattr(state, "_engine", None)
    return state._policies


def test_every_alias_is_listed():
    import vllm

    root = Path(vllm.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        text = path.read_text(errors="ignore")
        if re.search(r"import[^\n]*\bget_max_tokens\b", text):
            rel = path.relative_to(root.parent).with_suffix("")
            found.add(".".join(rel.parts))
    assert found == set(patch.ALIAS_MODULES)


def test_every_alias_is_the_wrapper():
    from vllm.entrypoints.serve.utils import api_utils

    patch.apply()
    wrapper = api_utils.get_max_tokens
    assert original_of(wrapper) is not None
    for name in patch.ALIAS_MODULES:
        assert importlib.import_module(name).get_max_tokens is wrapper, name


def test_apply_rebinds_an_alias_imported_before(monkeypatch):
    from vllm.entrypoints.openai.completion import serving

    patch.apply()
    wrapper = serving.get_max_tokens
    monkeypatch.setattr(serving, "get_max_tokens", original_of(wrapper))
    patch.apply()
    assert serving.get_max_tokens is wrapper
    assert (
        original_of(wrapper) is not None and original_of(original_of(wrapper)) is None
    )


def test_stock_without_a_sink_engine(policies):
    from vllm.entrypoints.serve.utils import api_utils
    from vllm.exceptions import VLLMValidationError
    from vllm.renderers.params import TokenizeParams

    state.record_policy({})
    assert not state.sink_served()
    assert api_utils.get_max_tokens(512, 1200, 30, {}) == 482
    assert api_utils.get_max_tokens(512, None, 30, {}) == 482
    with pytest.raises(VLLMValidationError, match="cannot be greater than"):
        TokenizeParams(max_total_tokens=512, max_output_tokens=1200)


def test_mixed_policies_stay_stock(policies):
    from vllm.entrypoints.serve.utils import api_utils

    state.record_policy({"kv_policy": "sink"})
    assert api_utils.get_max_tokens(512, 1200, 30, {}) == 1200
    state.record_policy({"kv_policy": "none"})
    assert api_utils.get_max_tokens(512, 1200, 30, {}) == 482


def test_sink_honours_max_tokens(policies):
    from vllm.entrypoints.serve.utils import api_utils
    from vllm.renderers.params import TokenizeParams

    assert state.record_policy({"kv_policy": "sink"})
    assert api_utils.get_max_tokens(512, 1200, 30, {}) == 1200
    assert api_utils.get_max_tokens(512, None, 30, {}) == 4096
    assert api_utils.get_max_tokens(512, None, 30, {"max_tokens": 700}) == 700
    assert api_utils.get_max_tokens(512, 1200, 30, {}, 900) == 900
    params = TokenizeParams(max_total_tokens=512, max_output_tokens=1200)
    assert params.max_output_tokens == 512 and params.max_input_tokens == 512
    # Prompt lengths are checked per request at render time, not here.
    assert api_utils.get_max_tokens(512, 10, 5000, {}) == 10


def test_env_sets_the_default_cap(policies, monkeypatch):
    from vllm.entrypoints.serve.utils import api_utils

    monkeypatch.setenv(state.DEFAULT_MAX_TOKENS_ENV, "600")
    state.record_policy({"kv_policy": "sink"})
    assert api_utils.get_max_tokens(512, None, 30, {}) == 600
    monkeypatch.setenv(state.DEFAULT_MAX_TOKENS_ENV, "zero")
    with pytest.raises(StreamingSinkConfigError, match="VLLM_SINK_DEFAULT_MAX"):
        state.record_policy({"kv_policy": "sink"})


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((1024, 3000, 100, {}), 3000),
        ((1024, None, 100, {}), 4096),
        ((1024, None, 100, {"max_tokens": 50}), 50),
        ((1024, 3000, 100, {}, 2000), 2000),
        # Truncation to -1 keeps the stock input check passable.
        ((1024, 3000, 5000, {}, None, -1), 3000),
        ((1024, 3000, 5000, {}, None, 1000), 3000),
    ],
)
def test_sink_max_tokens(args, expected):
    assert patch.sink_max_tokens(*args) == expected


def test_sink_max_tokens_platform_limit():
    got = patch.sink_max_tokens(1024, 3000, 10, {}, platform_max_tokens=256)
    assert got == 256
    assert patch.sink_max_tokens(1024, None, 10, {}, default_cap=77) == 77


def test_sink_max_tokens_accepts_long_prompts():
    assert patch.sink_max_tokens(1024, 7, 1025, {}) == 7


def test_renderer_records_the_policy(policies):
    from vllm.renderers.base import BaseRenderer

    assert original_of(BaseRenderer.__init__) is not None
    seen = []

    class Config:
        additional_config = {"kv_policy": "sink", "sink_window": 64}

    init = patch._renderer_init(lambda self, config, tok: seen.append(tok))
    init(object(), Config(), "tokenizer")
    assert seen == ["tokenizer"] and state.sink_served()
