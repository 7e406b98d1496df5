# SPDX-License-Identifier: Apache-2.0
"""GPU tier, two GPUs: the sink policy under tensor parallelism over Ray.

``--tensor-parallel-size 2 --distributed-executor-backend ray``: the plugin
loads in each Ray worker (a general plugin), each worker writes its half of
the KV heads and runs the eviction, view and RoPE-table steps on them. The
scheduler (and so the policy's block accounting) stays in the engine core.

The tiny random Llama here has 4 query and 2 KV heads (one per GPU), head_dim
64, peaked weights (``save_peaked``: greedy is decided by clear margins).
fp32 on FLEX_ATTENTION (exact float32 matmuls), block 16, 4 sinks + 64-token
window: an 80-token cache, streams 52x the cache, past max_model_len.

With ``SINK_RESULTS_DIR`` set, the greedy comparison is also written to
``SINK_RESULTS_DIR/tp_greedy.json`` (``benchmarks/tp_summary.py`` reads it).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

from tests.conftest import build_tiny_llama
from tests.e2e.conftest import _sampling, _tokens
from tests.gpu.test_gpu_sink import (
    BLOCK,
    CACHE,
    CHUNK,
    FP32,
    MAX_MODEL_LEN,
    _engine,
    _reference,
    check_fp32_stream,
)

pytestmark = pytest.mark.gpu

TP = 2
RAY = dict(tensor_parallel_size=TP, distributed_executor_backend="ray")
PROMPT = _tokens(52 * CACHE, seed=21)


def _num_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


if _num_gpus() < TP:
    pytestmark = [pytestmark, pytest.mark.skip(reason=f"needs {TP} GPUs")]


@pytest.fixture(scope="module")
def tiny_tp_llama(tmp_path_factory) -> Path:
    """4 query heads, 2 KV heads: each of the two ranks holds one KV head."""
    folder = tmp_path_factory.mktemp("tiny-tp-llama")
    return build_tiny_llama(folder, num_attention_heads=4, num_key_value_heads=2)


@contextlib.contextmanager
def _tp_engine(model, **kwargs):
    """A TP=2 Ray engine; Ray is shut down after it (vLLM's shutdown keeps the
    placement group of both GPUs, and the next Ray engine would wait for it)."""
    import ray

    try:
        with _engine(model, **kwargs, **RAY) as engine:
            yield engine
    finally:
        if ray.is_initialized():
            ray.shutdown()


def test_tp2_over_ray_fp32_teacher_forced_matches_reference(tiny_tp_llama):
    reference = _reference(tiny_tp_llama).stream(
        PROMPT, max_new_tokens=0, max_chunk=CHUNK, max_model_len=MAX_MODEL_LEN
    )
    with _tp_engine(tiny_tp_llama, enforce_eager=True, **FP32) as engine:
        config = engine[0].llm_engine.vllm_config.parallel_config
        assert config.tensor_parallel_size == TP
        assert config.distributed_executor_backend == "ray"
        check_fp32_stream(
            engine, PROMPT, reference.prompt_logprobs, label=f"tp{TP} ray"
        )


def _greedy(model, n, *, tp):
    """Greedy streams past max_model_len, compiled with CUDA graphs."""
    prompts = [_tokens(100, seed=5), _tokens(700, seed=6)]
    engine = _tp_engine if tp else _engine
    with engine(model, enforce_eager=False, **FP32) as (llm, sched):
        outs = llm.generate(
            [{"prompt_token_ids": p} for p in prompts], _sampling(max_tokens=n)
        )
        held = sched.sink_stats.max_blocks_held
    return [list(o.outputs[0].token_ids) for o in outs], held


def test_tp2_over_ray_greedy_equals_tp1(tiny_tp_llama):
    n = 52 * CACHE  # 4160 tokens, past max_model_len 1024
    tp1, held1 = _greedy(tiny_tp_llama, n, tp=False)
    tp2, held2 = _greedy(tiny_tp_llama, n, tp=True)
    first = [
        next((i for i, (a, b) in enumerate(zip(x, y, strict=True)) if a != b), None)
        for x, y in zip(tp1, tp2, strict=True)
    ]
    equal = tp1 == tp2
    result = {
        "outputs_equal": equal,
        "first_divergence": first,
        "tokens_per_stream": n,
        "streams": len(tp1),
        "max_model_len": MAX_MODEL_LEN,
        "max_blocks_held": {"tp1": held1, "tp2": held2},
        "model": "tiny random Llama, 4 heads / 2 KV heads, head_dim 64, fp32",
        "attention_backend": FP32["attention_backend"],
    }
    print(f"MEASURED gpu tp1 vs tp{TP} ray greedy: {json.dumps(result)}")
    if os.environ.get("SINK_RESULTS_DIR"):
        path = Path(os.environ["SINK_RESULTS_DIR"]) / "tp_greedy.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
    assert all(len(x) == n for x in tp1 + tp2)
    assert equal, first
    # sinks (1) + window (4) + a chunk's blocks + the sink view: constant.
    assert max(held1, held2) <= 1 + 4 + CHUNK // BLOCK + 1, (held1, held2)
