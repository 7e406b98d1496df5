# SPDX-License-Identifier: Apache-2.0
"""``vllm serve``: the flags are in --help, bad values stop startup by name."""

import pytest

from tests.helpers import Server, run_cli

pytestmark = pytest.mark.e2e


def test_help_lists_the_flags():
    result = run_cli("serve", "--help=StreamingLLM")
    assert result.returncode == 0, result.stderr
    for flag in ("--kv-policy {none,sink}", "--num-sink-tokens", "--sink-window"):
        assert flag in result.stdout
    overview = run_cli("serve", "--help").stdout
    assert "StreamingLLM" in overview


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--kv-policy", "lru"], "argument --kv-policy: invalid choice"),
        (
            ["--kv-policy", "sink", "--num-sink-tokens", "-1"],
            "--num-sink-tokens (additional_config['num_sink_tokens']) must be >= 0",
        ),
        (
            ["--kv-policy", "sink", "--sink-window", "-5"],
            "--sink-window (additional_config['sink_window']) must be >= 1",
        ),
        (
            ["--kv-policy", "sink", "--num-sink-tokens", "64", "--sink-window", "64"],
            "sinks < window",
        ),
        (["--num-sink-tokens", "8"], "add --kv-policy sink"),
        (
            ["--kv-policy", "sink", "--sink-window", "8", "--block-size", "32"],
            "must be >= the KV block size (32)",
        ),
        (
            [
                "--kv-policy",
                "sink",
                "--sink-window",
                "4000",
                "--max-model-len",
                "512",
                "--block-size",
                "32",
            ],
            "--sink-window (additional_config['sink_window']) must be <= 448",
        ),
    ],
)
def test_bad_values_stop_startup(tiny_llama, args, needle):
    result = run_cli("serve", str(tiny_llama), "--skip-tokenizer-init", *args)
    assert result.returncode != 0
    assert needle in result.stderr + result.stdout


def test_serve_starts_with_the_policy(smollm2, tmp_path):
    args = [
        "--kv-policy",
        "sink",
        "--num-sink-tokens",
        "4",
        "--sink-window",
        "252",
        "--max-model-len",
        "1024",
        "--block-size",
        "32",
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        str(256 << 20),
    ]
    with Server(smollm2, *args, log=tmp_path / "serve.log") as server:
        from openai import OpenAI

        client = OpenAI(base_url=f"{server.url}/v1", api_key="none")
        reply = client.chat.completions.create(
            model=str(smollm2),
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=16,
        )
        assert reply.choices[0].message.content
        assert "vllm:" in server.get("/metrics")
    assert "StreamingLLM policy: 4 sink tokens" in server.log.read_text()
