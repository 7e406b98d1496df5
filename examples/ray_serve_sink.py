# SPDX-License-Identifier: Apache-2.0
"""An OpenAI endpoint on Ray Serve LLM with the StreamingLLM sink policy.

``ray.serve.llm`` runs vLLM inside a Ray Serve replica (a Ray actor); the
policy travels in ``engine_kwargs["additional_config"]`` and the plugin's
``vllm.general_plugins`` entry point installs it in every process the replica
starts. On CPU (``--device cpu``) Ray Serve LLM gives vLLM the ``mp``
executor, because vLLM's CPU platform has no Ray executor; on GPU it uses
vLLM's Ray executor (one Ray actor per tensor-parallel worker)::

    python examples/ray_serve_sink.py --device cpu         # SmolLM2, CPU
    python examples/ray_serve_sink.py --model Qwen/Qwen2.5-7B-Instruct \\
        --tensor-parallel-size 2                           # 2 GPUs

Then any OpenAI client, with ``max_tokens`` past ``max_model_len``::

    curl localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{"model": "sink-llm", "max_tokens": 2000,
           "messages": [{"role": "user", "content": "Tell me a long story."}]}'
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

MODEL_ID = "sink-llm"


def sink_llm_config(
    model: str,
    *,
    device: str = "gpu",
    tensor_parallel_size: int = 1,
    max_model_len: int = 4096,
    num_sink_tokens: int = 4,
    sink_window: int = 1020,
    engine_kwargs: dict | None = None,
    runtime_env: dict | None = None,
):
    """A ``ray.serve.llm.LLMConfig`` of one sink-policy model.

    Args:
        model: a local path or a Hugging Face model id.
        device: ``"cpu"`` (vLLM's CPU build, ``mp`` executor) or ``"gpu"``.
        tensor_parallel_size: GPUs (Ray actors) per replica.
        max_model_len: positions RoPE sees; streams may run past it.
        num_sink_tokens: S, the first tokens kept forever.
        sink_window: W, the most recent tokens kept besides the sinks.
        engine_kwargs: further vLLM engine arguments (they win).
        runtime_env: the Ray runtime env of the replica (e.g. ``env_vars``).
    """
    from ray.serve.llm import LLMConfig

    kwargs = {
        "max_model_len": max_model_len,
        "tensor_parallel_size": tensor_parallel_size,
        "additional_config": {
            "kv_policy": "sink",
            "num_sink_tokens": num_sink_tokens,
            "sink_window": sink_window,
        },
        **(engine_kwargs or {}),
    }
    return LLMConfig(
        model_loading_config={"model_id": MODEL_ID, "model_source": model},
        engine_kwargs=kwargs,
        accelerator_config={"kind": device},
        deployment_config={"autoscaling_config": {"min_replicas": 1}},
        runtime_env=runtime_env or {},
        # Ray's own engine-metrics logger is off (untested beside the plugin's
        # stat logger, which vLLM adds anyway). The vllm:sink_* metrics live
        # in the replica; set PROMETHEUS_MULTIPROC_DIR in runtime_env to read
        # them (tests/e2e/test_ray.py does).
        log_engine_metrics=False,
    )


def deploy(llm_config, *, host: str = "127.0.0.1", port: int = 8000):
    """Starts Serve's HTTP proxy and the OpenAI app; returns the base URL.

    Blocks until the replica's engine is up (``serve.run`` waits).
    """
    from ray import serve
    from ray.serve.llm import build_openai_app

    serve.start(http_options={"host": host, "port": port})
    app = build_openai_app({"llm_configs": [llm_config]})
    serve.run(app, blocking=False)
    return f"http://{host}:{port}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="default: the embedded SmolLM2-135M")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="gpu")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--num-sink-tokens", type=int, default=4)
    parser.add_argument("--sink-window", type=int, default=1020)
    parser.add_argument("--kv-cache-mib", type=int, default=256, help="CPU only")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--num-cpus",
        type=int,
        help="logical CPUs of the local Ray (default: max(4, cores)); the "
        "engine's placement group and the ingress replica need one each",
    )
    args = parser.parse_args()

    import ray
    from ray import serve

    from vllm_sink_plugin.assets import smollm2_path

    # vLLM's CPU default claims 92% of the RAM for the KV cache; name a size.
    extra = (
        {"enforce_eager": True, "kv_cache_memory_bytes": args.kv_cache_mib << 20}
        if args.device == "cpu"
        else {}
    )
    config = sink_llm_config(
        args.model or str(smollm2_path()),
        device=args.device,
        tensor_parallel_size=args.tensor_parallel_size,
        max_model_len=args.max_model_len,
        num_sink_tokens=args.num_sink_tokens,
        sink_window=args.sink_window,
        engine_kwargs=extra,
    )
    num_cpus = args.num_cpus or max(4, os.cpu_count() or 1)
    ray.init(num_cpus=num_cpus, include_dashboard=False)
    # Ctrl-C (or SIGTERM) only sets a flag, even while Serve starts: Ray's
    # calls may swallow a KeyboardInterrupt; the shutdown below always runs.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        url = deploy(config, host="0.0.0.0", port=args.port)
        print(f"OpenAI API at {url} (model {MODEL_ID!r}); Ctrl-C stops it")
        while not stop.wait(timeout=1.0):
            pass
        print("stopping: Serve, then Ray")
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
