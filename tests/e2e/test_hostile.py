# SPDX-License-Identifier: Apache-2.0
"""Hostile clients against one real ``vllm serve --kv-policy sink`` (CPU).

No request may take the server down: every answer below is 2xx or 4xx, the
server stays healthy, a normal chat works afterwards, and once the clients
are gone ``vllm:sink_requests_running`` and ``vllm:kv_cache_usage_perc`` are
back to 0. Each case also checks what the answer must be (the field a 400
names, what a 200 holds). SmolLM2, max_model_len 512, window 224, prompts of
sink requests capped at 8192 tokens (``--sink-max-prompt-tokens``).
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

MAX_MODEL_LEN = 512
PROMPT_CAP = 8192
ARGS = [
    "--max-model-len",
    str(MAX_MODEL_LEN),
    "--block-size",
    "32",
    "--enforce-eager",
    "--kv-cache-memory-bytes",
    "268435456",
    "--kv-policy",
    "sink",
    "--sink-window",
    "224",
    "--sink-max-prompt-tokens",
    str(PROMPT_CAP),
]
ASK = "Tell me a long story about a lighthouse keeper and the sea."


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    log = tmp_path_factory.mktemp("hostile") / "serve.log"
    with Server(smollm2, *ARGS, log=log) as server:
        yield server


def _post(server, path, body, *, timeout=300):
    """(HTTP status, decoded JSON body or raw text) of one POST."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{server.url}{path}",
        data=data,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read().decode()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def _completion(smollm2, **body):
    return {"model": str(smollm2), "prompt": ASK, "max_tokens": 8, **body}


def _chat(smollm2, **body):
    messages = [{"role": "user", "content": ASK}]
    return {"model": str(smollm2), "messages": messages, "max_tokens": 8, **body}


def _tokens(n, seed=0, low=10, high=40000):
    rng = random.Random(seed)
    return [rng.randrange(low, high) for _ in range(n)]


# (case id, endpoint, body maker, expected status, what a 400 must name)
CMPL, CHAT = "/v1/completions", "/v1/chat/completions"
REFUSED = [
    ("max_tokens 2**31-1", CMPL, dict(max_tokens=2**31 - 1), "max_tokens"),
    ("chat max_tokens 2**31-1", CHAT, dict(max_tokens=2**31 - 1), "max_tokens"),
    ("max_tokens 2**63", CMPL, dict(max_tokens=2**63), None),
    ("max_tokens negative", CMPL, dict(max_tokens=-5), None),
    ("max_tokens float", CMPL, dict(max_tokens=1.5), None),
    ("num_sink_tokens true", CMPL, dict(num_sink_tokens=True), "num_sink_tokens"),
    (
        "xargs num_sink_tokens true",
        CMPL,
        dict(vllm_xargs={"num_sink_tokens": True}),
        "num_sink_tokens",
    ),
    ("xargs sink_window false", CHAT, dict(vllm_xargs={"sink_window": False}), None),
    ("num_sink_tokens float", CMPL, dict(num_sink_tokens=4.0), "num_sink_tokens"),
    ("xargs sink_window float", CMPL, dict(vllm_xargs={"sink_window": 64.0}), None),
    ("sink_window string", CHAT, dict(sink_window="224"), "sink_window"),
    ("xargs sink_window string", CMPL, dict(vllm_xargs={"sink_window": "64"}), None),
    ("sink_window list", CMPL, dict(sink_window=[224]), "sink_window"),
    ("sink_window dict", CMPL, dict(sink_window={"a": 1}), "sink_window"),
    ("sink_window huge", CMPL, dict(sink_window=10**30), "sink_window"),
    ("num_sink_tokens negative", CHAT, dict(num_sink_tokens=-1), "num_sink_tokens"),
    ("sinks >= window", CMPL, dict(num_sink_tokens=64, sink_window=64), None),
    ("kv_policy null", CMPL, dict(kv_policy=None), "kv_policy"),
    ("kv_policy number", CHAT, dict(kv_policy=1), "kv_policy"),
    ("pin string", CHAT, dict(pin_system_prompt="true"), "pin_system_prompt"),
    ("pin 2", CHAT, dict(pin_system_prompt=2), "pin_system_prompt"),
    ("pin on completion", CMPL, dict(pin_system_prompt=True), "pin_system_prompt"),
    ("vllm_xargs not a dict", CMPL, dict(vllm_xargs="sink"), None),
    ("prompt over the cap", CMPL, dict(prompt=_tokens(20000)), "prompt"),
    (
        "dense prompt over max_model_len",
        CMPL,
        dict(prompt=_tokens(20000), kv_policy="none"),
        None,
    ),
    ("out-of-vocab token id", CMPL, dict(prompt=[1, 2, 10**7]), None),
    ("negative token id", CMPL, dict(prompt=[1, -3, 5]), None),
    ("empty prompt", CMPL, dict(prompt=""), None),
    (
        "prompt_logprobs over the cap",
        CMPL,
        dict(prompt=_tokens(2000), prompt_logprobs=5),
        "prompt_logprobs",
    ),
    ("prompt_logprobs -1", CMPL, dict(prompt_logprobs=-1), None),
    ("beam search", CMPL, dict(use_beam_search=True, n=2), "use_beam_search"),
    ("prompt embeddings", CMPL, dict(prompt_embeds="AAAA", prompt=None), None),
    ("negative temperature", CHAT, dict(temperature=-1), None),
    ("messages not a list", CHAT, dict(messages="hi"), None),
    ("stream with a bad field", CHAT, dict(stream=True, sink_window=-4), None),
]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_hostile_request_is_a_4xx(server, smollm2, path, body, field):
    make = _completion if path == CMPL else _chat
    status, answer = _post(server, path, make(smollm2, **body))
    assert 400 <= status < 500, (status, answer)
    if field is not None:
        assert f"{field}" in json.dumps(answer), answer
    _HOSTILE_RESULTS.append(status)


_HOSTILE_RESULTS: list[int] = []


def test_n_and_logprobs_run_past_max_model_len(server, smollm2):
    status, answer = _post(
        server,
        CMPL,
        # Token ids, not texts, key top_logprobs: distinct ids that decode
        # alike (byte pieces of a degenerate sample) would share one key.
        _completion(
            smollm2,
            max_tokens=600,
            n=2,
            logprobs=3,
            ignore_eos=True,
            return_tokens_as_token_ids=True,
        ),
    )
    assert status == 200, answer
    assert len(answer["choices"]) == 2
    for choice in answer["choices"]:
        assert len(choice["logprobs"]["tokens"]) == 600
        tops = choice["logprobs"]["top_logprobs"]
        assert len(tops) == 600 and all(3 <= len(top) <= 4 for top in tops)
    _HOSTILE_RESULTS.append(status)


def test_best_of_is_answered(server, smollm2):
    status, answer = _post(server, CMPL, _completion(smollm2, best_of=2, n=1))
    assert status == 200 or 400 <= status < 500, answer
    _HOSTILE_RESULTS.append(status)


def test_structured_output_after_the_prompt_rolled(server, smollm2):
    schema = {
        "type": "object",
        "properties": {"keeper": {"type": "string", "maxLength": 12}},
        "required": ["keeper"],
        "additionalProperties": False,
    }
    text = " ".join(f"word{i}" for i in range(900)) + "\nName the keeper in JSON."
    status, answer = _post(
        server,
        CHAT,
        _chat(
            smollm2,
            messages=[{"role": "user", "content": text}],
            max_tokens=60,
            temperature=0,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "keeper", "schema": schema},
            },
        ),
    )
    assert status == 200, answer
    assert answer["usage"]["prompt_tokens"] > 2 * MAX_MODEL_LEN  # evicted
    assert set(json.loads(answer["choices"][0]["message"]["content"])) == {"keeper"}
    _HOSTILE_RESULTS.append(status)


def test_stop_string_after_evictions(server, smollm2):
    # Seeded sampling: reproducible, and unlike greedy text it does not settle
    # into a loop, so late text holds strings not seen before.
    body = _completion(
        smollm2, max_tokens=700, temperature=1.0, seed=1234, ignore_eos=True
    )
    status, first = _post(server, CMPL, body)
    assert status == 200, first
    text = first["choices"][0]["text"]
    # A stop string first seen well after the window rolled (>= 600 tokens in).
    late = text[-len(text) // 8 :]
    stop = next(
        late[i : i + 6]
        for i in range(len(late) - 6)
        if late[i : i + 6].strip() and late[i : i + 6] not in text[: -len(late)]
    )
    status, second = _post(server, CMPL, {**body, "stop": [stop]})
    assert status == 200, second
    choice = second["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == text[: text.index(stop)]
    assert second["usage"]["completion_tokens"] > MAX_MODEL_LEN
    _HOSTILE_RESULTS.append(status)


def test_clients_that_vanish_mid_stream(server, smollm2):
    rng = random.Random(7)
    statuses = []

    def client(lines):
        request = urllib.request.Request(
            f"{server.url}{CMPL}",
            data=json.dumps(
                _completion(smollm2, max_tokens=100000, stream=True, ignore_eos=True)
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            statuses.append(response.status)
            for _ in range(lines):
                response.readline()
        # leaving the block closes the connection mid-stream

    threads = [
        threading.Thread(target=client, args=(rng.randrange(2, 80),)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert statuses == [200] * 8
    _HOSTILE_RESULTS.extend(statuses)


def _metric(server, name):
    total = 0.0
    for line in server.get("/metrics").splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rpartition(" ")[2])
    return total


def test_server_survives_and_returns_to_idle(server, smollm2):
    """Runs last in this module: the server is healthy and back to zero."""
    assert len(_HOSTILE_RESULTS) >= 30, len(_HOSTILE_RESULTS)
    assert all(200 <= s < 300 or 400 <= s < 500 for s in _HOSTILE_RESULTS)
    print(
        f"MEASURED hostile requests: {len(_HOSTILE_RESULTS)}, "
        f"2xx {sum(200 <= s < 300 for s in _HOSTILE_RESULTS)}, "
        f"4xx {sum(400 <= s < 500 for s in _HOSTILE_RESULTS)}"
    )
    assert server.get("/health") == ""
    status, answer = _post(server, CHAT, _chat(smollm2, max_tokens=16))
    assert status == 200 and answer["choices"][0]["message"]["content"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = _metric(server, "vllm:sink_requests_running")
        usage = _metric(server, "vllm:kv_cache_usage_perc")
        if running == 0 and usage == 0:
            break
        time.sleep(0.5)
    assert (running, usage) == (0, 0)
    assert server.proc.poll() is None
