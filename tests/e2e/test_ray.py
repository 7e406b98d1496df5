# SPDX-License-Identifier: Apache-2.0
"""The sink policy under Ray: a Ray Serve LLM deployment on a local Ray.

One local Ray (``ray.init(num_cpus=4)``) and one deployment of
``examples/ray_serve_sink.py`` (SmolLM2, fp32) per module. The replica is a
Ray actor that starts vLLM's engine core and worker (``mp`` executor: on CPU
Ray Serve LLM picks it, since vLLM's CPU platform has no Ray executor, which
the last test pins down). The KV pool holds 10 blocks (320 tokens) and
``max_model_len`` is 256, so a 600-token answer finishes only if the policy
in those processes keeps evicting; its blocks are read from the replica's
``vllm:sink_request_cache_blocks`` histogram (``PROMETHEUS_MULTIPROC_DIR``).
"""

import json
import os
from pathlib import Path

import pytest

from tests.e2e.sink_engine import in_process_llm, sink_config
from tests.helpers import CPU_ENGINE_KWARGS, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ray = pytest.importorskip("ray", reason="the `ray` extra is not installed")

BLOCK, SINKS, WINDOW = 32, 4, 96  # 1 sink block + 3 window blocks
MAX_MODEL_LEN = 256
POOL_BLOCKS = 10  # 320 tokens; 15 MiB of fp32 SmolLM2 blocks (1.41 MiB each)
KV_BYTES = 15 << 20
N_TOKENS = 600  # > 2x max_model_len, ~2x the whole pool
PROMPT = "Tell me a very long story about a lighthouse keeper and the sea."
ENGINE_KWARGS = dict(
    CPU_ENGINE_KWARGS,
    kv_cache_memory_bytes=KV_BYTES,
    max_model_len=MAX_MODEL_LEN,
)


@pytest.fixture(scope="module")
def local_ray():
    # Ray's workers inherit this process's environment when ray.init starts
    # the raylet; the suite's legacy KV-size variable would override
    # kv_cache_memory_bytes (vLLM's CPU platform reads it) and grow the pool.
    saved = os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    try:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    finally:
        if saved is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = saved
    yield
    ray.shutdown()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def deployment(local_ray, smollm2, tmp_path_factory):
    """``(base URL, metrics dir, trace file)`` of the running deployment."""
    from ray import serve

    from examples.ray_serve_sink import deploy, sink_llm_config

    tmp = tmp_path_factory.mktemp("ray-serve")
    metrics, trace = tmp / "prometheus", tmp / "trace.jsonl"
    metrics.mkdir()
    config = sink_llm_config(
        str(smollm2),
        device="cpu",
        max_model_len=MAX_MODEL_LEN,
        num_sink_tokens=SINKS,
        sink_window=WINDOW,
        engine_kwargs=ENGINE_KWARGS,
        runtime_env={
            "env_vars": {
                "PROMETHEUS_MULTIPROC_DIR": str(metrics),
                "VLLM_SINK_TRACE_FILE": str(trace),
                "HF_HUB_OFFLINE": "1",
            }
        },
    )
    try:
        url = deploy(config, port=free_port())
        yield url, metrics, trace
    finally:
        serve.shutdown()


def _samples(metrics: Path, name: str) -> list:
    """Samples named ``name`` that the replica's processes wrote."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics))
    return [s for f in registry.collect() for s in f.samples if s.name == name]


def _buckets(metrics: Path, histogram: str) -> dict[str, float]:
    """Cumulative bucket counts (``le`` -> count) of one histogram."""
    buckets: dict[str, float] = {}
    for sample in _samples(metrics, f"{histogram}_bucket"):
        le = sample.labels["le"]
        buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def _is_ray_worker(pid: int) -> bool:
    """Whether ``pid``'s parent is a raylet (Ray starts its workers so)."""
    ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    return Path(f"/proc/{ppid}/comm").read_text().strip() == "raylet"


def test_chat_streams_past_max_model_len_in_bounded_blocks(deployment):
    from openai import OpenAI

    url, metrics, trace = deployment
    client = OpenAI(base_url=url, api_key="unused", timeout=600)
    answer = client.chat.completions.create(
        model="sink-llm",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=N_TOKENS,
        temperature=0.0,
        extra_body={"ignore_eos": True},
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == N_TOKENS
    total = answer.usage.prompt_tokens + N_TOKENS
    assert total > POOL_BLOCKS * BLOCK > MAX_MODEL_LEN, total

    (info,) = _samples(metrics, "vllm:cache_config_info")
    assert int(info.labels["num_gpu_blocks"]) == POOL_BLOCKS, info.labels
    buckets = _buckets(metrics, "vllm:sink_request_cache_blocks")
    steps = buckets["+Inf"]
    print(
        f"MEASURED ray serve: {total} tokens through a {POOL_BLOCKS * BLOCK}-token "
        f"pool, max_model_len {MAX_MODEL_LEN}; blocks held per step <=4: "
        f"{buckets['4.0']:.0f}, <=8: {buckets['8.0']:.0f} of {steps:.0f}"
    )
    # One observation per engine step but the one that finishes the request.
    assert steps >= N_TOKENS - 1
    # ceil(S/B) + ceil(W/B) + one prefill chunk (one window) = 7 at most
    assert buckets["8.0"] == steps
    assert buckets["4.0"] < steps  # the window did fill

    # register() ran in the replica (a Ray worker) and in its engine core
    # and vLLM worker, children of that replica.
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    by_name = {r["mp_name"]: r for r in records if r["event"] == "register"}
    replica, core = by_name["MainProcess"], by_name["EngineCore"]
    assert _is_ray_worker(replica["pid"]), records
    assert core["ppid"] == replica["pid"], records
    assert by_name["VllmWorker-0"]["ppid"] == core["pid"], records


def test_same_tokens_as_an_engine_outside_ray(deployment, smollm2):
    """Greedy token ids through Serve's completions API == a plain engine."""
    from openai import OpenAI
    from vllm import SamplingParams

    url, _, _ = deployment
    prompt = list(range(1000, 1040))
    n = 400
    answer = OpenAI(base_url=url, api_key="unused", timeout=600).completions.create(
        model="sink-llm",
        prompt=prompt,
        max_tokens=n,
        temperature=0.0,
        logprobs=0,
        extra_body={"ignore_eos": True, "return_tokens_as_token_ids": True},
    )
    served = [
        int(t.removeprefix("token_id:")) for t in answer.choices[0].logprobs.tokens
    ]
    assert len(served) == n
    with in_process_llm(
        smollm2, **ENGINE_KWARGS, additional_config=sink_config(SINKS, WINDOW)
    ) as (llm, _):
        out = llm.generate(
            [{"prompt_token_ids": prompt}],
            SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True),
        )[0].outputs[0]
    first = next(
        (
            i
            for i, (a, b) in enumerate(zip(served, out.token_ids, strict=True))
            if a != b
        ),
        None,
    )
    print(f"MEASURED ray serve vs in-process, {n} greedy tokens: first diff {first}")
    assert served == list(out.token_ids)


def test_vllm_cpu_refuses_the_ray_executor(local_ray, tiny_llama):
    """vLLM 0.32 on CPU refuses ``distributed_executor_backend="ray"``.

    Its CPU platform has no ``ray_device_key``, so ``initialize_ray_cluster``
    raises before any worker starts. When this fails, vLLM-cpu runs Ray
    workers: test the policy in them.
    """
    from vllm.platforms import current_platform

    assert current_platform.is_cpu() and not current_platform.ray_device_key
    with (
        pytest.raises(ValueError, match="does not support ray"),
        in_process_llm(
            tiny_llama,
            skip_tokenizer_init=True,
            max_model_len=512,
            distributed_executor_backend="ray",
            additional_config=sink_config(SINKS, WINDOW),
        ),
    ):
        pass
