# SPDX-License-Identifier: Apache-2.0
"""``vllm serve --kv-policy sink`` generates past max_model_len over HTTP.

A stock server (policy none) still refuses ``max_tokens > max_model_len`` with
a 400 and clamps ``max_tokens`` to the room left after the prompt.
"""

import os

import pytest

from tests.helpers import Server
from vllm_sink_plugin.patches.frontend.patch_api_max_tokens import (
    DEFAULT_MAX_TOKENS_ENV,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MAX_MODEL_LEN = 512
DEFAULT_CAP = 600  # set through the env var so that (b) stays fast
ENGINE_ARGS = [
    "--max-model-len",
    str(MAX_MODEL_LEN),
    "--block-size",
    "32",
    "--enforce-eager",
    "--kv-cache-memory-bytes",
    "268435456",
]
SINK_ARGS = ["--kv-policy", "sink", "--sink-window", "224"]
NO_EOS = {"ignore_eos": True}
PROMPT = "Tell me a very long story about a lighthouse keeper."


def _client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key="none", timeout=600)


@pytest.fixture(scope="module")
def sink_server(smollm2, tmp_path_factory):
    saved = os.environ.get(DEFAULT_MAX_TOKENS_ENV)
    os.environ[DEFAULT_MAX_TOKENS_ENV] = str(DEFAULT_CAP)  # the server inherits it
    try:
        log = tmp_path_factory.mktemp("sink") / "serve.log"
        server = Server(smollm2, *ENGINE_ARGS, *SINK_ARGS, log=log)
    finally:
        os.environ.pop(DEFAULT_MAX_TOKENS_ENV)
        if saved is not None:
            os.environ[DEFAULT_MAX_TOKENS_ENV] = saved
    with server:
        yield server


@pytest.fixture(scope="module")
def stock_server(smollm2, tmp_path_factory):
    log = tmp_path_factory.mktemp("stock") / "serve.log"
    with Server(smollm2, *ENGINE_ARGS, log=log) as server:
        yield server


def test_stream_past_max_model_len(sink_server, smollm2):
    stream = _client(sink_server).chat.completions.create(
        model=str(smollm2),
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=1200,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=NO_EOS,
    )
    chunks, finish, usage = 0, None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            chunks += bool(choice.delta.content)
            finish = choice.finish_reason or finish
    assert usage.completion_tokens == 1200
    assert usage.prompt_tokens + 1200 > 2 * MAX_MODEL_LEN
    assert finish == "length"
    assert chunks > MAX_MODEL_LEN


def test_omitted_max_tokens_gets_the_default_cap(sink_server, smollm2):
    client = _client(sink_server)
    reply = client.chat.completions.create(
        model=str(smollm2),
        messages=[{"role": "user", "content": PROMPT}],
        extra_body=NO_EOS,
    )
    assert reply.usage.completion_tokens == DEFAULT_CAP
    assert reply.choices[0].finish_reason == "length"
    # /v1/completions keeps the OpenAI default of 16 when max_tokens is omitted.
    reply = client.completions.create(
        model=str(smollm2), prompt=PROMPT, extra_body=NO_EOS
    )
    assert reply.usage.completion_tokens == 16


def test_sink_still_refuses_long_prompts(sink_server, smollm2):
    import openai

    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        _client(sink_server).completions.create(
            model=str(smollm2), prompt=[7] * (MAX_MODEL_LEN + 1), max_tokens=4
        )


def test_stock_refuses_max_tokens_over_max_model_len(stock_server, smollm2):
    import openai

    with pytest.raises(openai.BadRequestError) as error:
        _client(stock_server).chat.completions.create(
            model=str(smollm2),
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=1200,
            extra_body=NO_EOS,
        )
    assert "max_tokens=1200 cannot be greater than max_model_len=512" in str(
        error.value
    )


def test_stock_clamps_to_the_room_left(stock_server, smollm2):
    reply = _client(stock_server).completions.create(
        model=str(smollm2),
        prompt=PROMPT,
        max_tokens=MAX_MODEL_LEN,
        extra_body=NO_EOS,
    )
    usage = reply.usage
    assert usage.completion_tokens == MAX_MODEL_LEN - usage.prompt_tokens
    assert reply.choices[0].finish_reason == "length"
