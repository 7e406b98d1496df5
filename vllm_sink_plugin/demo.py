# SPDX-License-Identifier: Apache-2.0
"""Streams a story past ``max_model_len`` from a local ``vllm serve``.

Usage::

    python -m vllm_sink_plugin.demo [--kv-policy sink|none] [--max-tokens N]
                                    [--port P] [--compare] [--enforce-eager]

Starts the embedded SmolLM2 model (``assets.fetch("smollm2")``) behind an
OpenAI server with ``max_model_len`` 1024, streams a chat completion of
``--max-tokens`` tokens (temperature 0.7, repetition penalty 1.2, EOS ignored)
and every ~2 s prints the tokens so far, tokens/s and the KV cache occupancy
read from ``/metrics``. With the sink policy the cache stays at sinks + window;
with ``none`` the request stops at ``max_model_len`` (stock vLLM refuses
``max_tokens > max_model_len``, so the demo then asks for ``max_model_len``
tokens). ``--compare`` runs both over the same number of tokens: the stock
server's story restarts (a new request) each time it reaches
``max_model_len``, as a stock deployment must. torch.compile is on (startup
~1.5-2 min on 2 CPU cores); ``--enforce-eager`` starts in ~40 s but decodes
~25% slower.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

MAX_MODEL_LEN = 1024
KV_CACHE_BYTES = 64 << 20  # ~2900 tokens of SmolLM2-135M in bf16
PROMPT = (
    "Write a very long, detailed story about a lighthouse keeper who finds a "
    "map in a bottle. Describe every place, every character and every day."
)
_GAUGE = re.compile(r"^vllm:kv_cache_usage_perc\{[^}]*\} (\S+)$", re.M)
_BLOCKS = re.compile(r'^vllm:cache_config_info\{[^}]*num_gpu_blocks="(\d+)"', re.M)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _scrape(url: str, pattern: re.Pattern, default: float = 0.0) -> float:
    """A number from the server's Prometheus ``/metrics`` page."""
    found = pattern.search(_get(f"{url}/metrics"))
    return float(found.group(1)) if found else default


def start_server(
    model: str, policy: str, port: int, log, eager: bool = False
) -> subprocess.Popen:
    """Starts ``vllm serve`` in its own process group, logging to ``log``."""
    cmd = [sys.executable, "-m", "vllm_sink_plugin.cli", "serve", model]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--max-model-len", str(MAX_MODEL_LEN), "--block-size", "32"]
    cmd += ["--kv-cache-memory-bytes", str(KV_CACHE_BYTES), "--dtype", "bfloat16"]
    if policy == "sink":
        cmd += ["--kv-policy", "sink", "--num-sink-tokens", "4", "--sink-window", "252"]
    if eager:
        cmd.append("--enforce-eager")
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float = 600) -> None:
    """Polls ``/health`` until it answers.

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            _get(f"{url}/health")
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"server not healthy after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    """Terminates the server's process group (API server and engine)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stream_story(url: str, model: str, max_tokens: int, pool: int) -> dict:
    """Streams one chat completion, printing text and a status every ~2 s."""
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", timeout=3600)
    request = dict(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        temperature=0.7,
        seed=0,
        stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True},
        # A 135M model loops quickly; the penalty keeps the story moving.
        extra_body={"ignore_eos": True, "repetition_penalty": 1.2},
    )
    try:
        stream = client.chat.completions.create(max_tokens=max_tokens, **request)
    except openai.BadRequestError as error:
        print(f"[refused: {error.message}; retrying with max_tokens={MAX_MODEL_LEN}]")
        stream = client.chat.completions.create(max_tokens=MAX_MODEL_LEN, **request)
    start = last = time.monotonic()
    tokens, prompt_tokens, max_kv, finish = 0, 0, 0.0, None
    for chunk in stream:
        if chunk.usage is not None:
            tokens, prompt_tokens = (
                chunk.usage.completion_tokens,
                chunk.usage.prompt_tokens,
            )
        for choice in chunk.choices:
            print(choice.delta.content or "", end="", flush=True)
            finish = choice.finish_reason or finish
        now = time.monotonic()
        if now - last >= 2.0:
            last = now
            kv = _scrape(url, _GAUGE)
            max_kv = max(max_kv, kv)
            print(
                f"\n[{now - start:6.1f} s | {tokens} tokens | "
                f"{tokens / (now - start):5.1f} tok/s | KV {100 * kv:5.1f}% of "
                f"{pool}-token pool | context {prompt_tokens + tokens}]",
                flush=True,
            )
    elapsed = time.monotonic() - start
    return dict(
        tokens=tokens,
        prompt_tokens=prompt_tokens,
        seconds=elapsed,
        tok_s=tokens / elapsed,
        max_kv=max_kv,
        finish=finish,
    )


def stream_restarting(url: str, model: str, max_tokens: int, pool: int) -> dict:
    """Stock vLLM: stories restarted at ``max_model_len`` until ``max_tokens``."""
    parts: list[dict] = []
    tokens = 0
    while tokens < max_tokens:
        if parts:
            print(f"\n== restarting at max_model_len ({max_tokens - tokens} to go)")
        parts.append(stream_story(url, model, max_tokens - tokens, pool))
        if parts[-1]["tokens"] == 0:
            break
        tokens += parts[-1]["tokens"]
    seconds = sum(p["seconds"] for p in parts)
    return dict(
        tokens=tokens,
        prompt_tokens=parts[0]["prompt_tokens"],
        seconds=seconds,
        tok_s=tokens / seconds if seconds else 0.0,
        max_kv=max(p["max_kv"] for p in parts),
        finish=parts[-1]["finish"],
        restarts=len(parts) - 1,
    )


def run(
    policy: str, max_tokens: int, port: int, eager: bool = False, restart=False
) -> dict:
    """Starts a server, streams a story, stops the server; returns stats.

    ``restart``: with policy ``none``, restart the story at ``max_model_len``
    until ``max_tokens`` tokens (a comparison over the same token count).
    """
    from vllm_sink_plugin.assets import fetch

    model = str(fetch("smollm2"))
    url = f"http://127.0.0.1:{port}"
    with tempfile.NamedTemporaryFile("w+", suffix=".log", prefix="sink-demo-") as log:
        print(f"== policy {policy}: starting vllm serve (log: {log.name})", flush=True)
        t0 = time.monotonic()
        proc = start_server(model, policy, port, log, eager)
        try:
            wait_healthy(proc, url)
            startup = time.monotonic() - t0
            blocks = int(_scrape(url, _BLOCKS))
            print(
                f"== ready in {startup:.1f} s; KV pool {blocks} blocks x 32 = "
                f"{blocks * 32} tokens; max_model_len {MAX_MODEL_LEN}",
                flush=True,
            )
            if restart and policy == "none":
                stats = stream_restarting(url, model, max_tokens, blocks * 32)
            else:
                stats = stream_story(url, model, max_tokens, blocks * 32)
        except Exception:
            log.flush()
            log.seek(0)
            print("\n== server log tail:\n" + log.read()[-4000:], file=sys.stderr)
            raise
        finally:
            stop_server(proc)
    stats.update(policy=policy, startup=startup)
    print(
        f"\n== policy {policy}: {stats['tokens']} tokens (+{stats['prompt_tokens']} "
        f"prompt) in {stats['seconds']:.1f} s = {stats['tok_s']:.1f} tok/s; max KV "
        f"usage {100 * stats['max_kv']:.1f}% of the pool; finish_reason "
        f"{stats['finish']!r}; startup {startup:.1f} s",
        flush=True,
    )
    if stats.get("restarts"):
        print(f"== policy none restarted {stats['restarts']} times at max_model_len")
    elif policy == "none" and stats["prompt_tokens"] + stats["tokens"] >= MAX_MODEL_LEN:
        print(f"== policy none stopped at max_model_len ({MAX_MODEL_LEN} tokens)")
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vllm_sink_plugin.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kv-policy", choices=("sink", "none"), default="sink")
    parser.add_argument("--max-tokens", type=int, default=3000)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run with policy sink, then none (restarted at max_model_len) over "
        "the same number of tokens, and compare",
    )
    parser.add_argument(
        "--enforce-eager", action="store_true", help="skip torch.compile"
    )
    args = parser.parse_args(argv)
    policies = ("sink", "none") if args.compare else (args.kv_policy,)
    # A SIGTERM unwinds like Ctrl-C, so the server is stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        results = [
            run(p, args.max_tokens, args.port, args.enforce_eager, args.compare)
            for p in policies
        ]
    except KeyboardInterrupt:
        sys.exit(130)
    if args.compare:
        for r in results:
            restarts = f", {r['restarts']} restarts" if r.get("restarts") else ""
            print(
                f"== {r['policy']:>4}: {r['tok_s']:.1f} tok/s over {r['tokens']} "
                f"tokens, max KV {100 * r['max_kv']:.1f}%, finish {r['finish']!r}"
                f"{restarts}"
            )


if __name__ == "__main__":
    main()
