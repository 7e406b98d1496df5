# SPDX-License-Identifier: Apache-2.0
"""GPU tier: the sink policy in vLLM's GPU runners vs the PyTorch reference.

Tiny random Llama (head_dim 64), block size 16, 4 sink tokens (one block)
and a 64-token window: an 80-token cache. Streams are 52x the cache. Model
Runner V2 (vLLM's default) unless a test says otherwise. bf16 runs vLLM's
default backend (FlashAttention 3 on H100); fp32 runs FLEX_ATTENTION, whose
matmuls honour vLLM's "highest" float32 precision (the default fp32 pick,
TRITON_ATTN, multiplies in TF32: about 5e-3 logprob error with or without
the plugin).
"""

from __future__ import annotations

import statistics

import pytest

from tests.e2e.conftest import _sampling, _tokens, no_growth, prompt_logprob_errors
from tests.e2e.sink_engine import in_process_llm, near_tie_divergence, sink_config
from tests.reference import StreamingLlamaReference

pytestmark = pytest.mark.gpu

BLOCK, SINKS, WINDOW, CHUNK = 16, 4, 64, 64
CACHE = BLOCK + WINDOW
MAX_MODEL_LEN = 1024
PROMPT = _tokens(52 * CACHE, seed=11)
GPU = dict(block_size=BLOCK, kv_cache_memory_bytes=256 << 20, seed=0)
FP32 = dict(dtype="float32", attention_backend="FLEX_ATTENTION")


def _engine(model, **kwargs):
    return in_process_llm(
        model,
        skip_tokenizer_init=True,
        max_model_len=MAX_MODEL_LEN,
        max_num_batched_tokens=256,
        additional_config=sink_config(SINKS, WINDOW),
        **{**GPU, **kwargs},
    )


def _reference(model, window=WINDOW):
    return StreamingLlamaReference(
        model, num_sink_tokens=SINKS, sink_window=window, block_size=BLOCK
    )


@pytest.fixture(scope="module")
def reference_logprobs(tiny_llama):
    stream = _reference(tiny_llama).stream(
        PROMPT, max_new_tokens=0, max_chunk=CHUNK, max_model_len=MAX_MODEL_LEN
    )
    return stream.prompt_logprobs


@pytest.mark.parametrize("runner", ["v2", "v2-sync", "v1"])
def test_fp32_teacher_forced_matches_reference(
    tiny_llama, reference_logprobs, runner, monkeypatch
):
    """V2 runs async scheduling (vLLM's default); V1 and "v2-sync" run sync."""
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "0" if runner == "v1" else "1")
    sync = {"async_scheduling": False} if runner == "v2-sync" else {}
    with _engine(tiny_llama, enforce_eager=True, **FP32, **sync) as engine:
        check_fp32_stream(engine, PROMPT, reference_logprobs, label=runner)


def check_fp32_stream(engine, prompt, reference, *, label):
    """Teacher-forced fp32 stream vs the reference: bar 1e-3, no growth, and
    every block back in the pool afterwards."""
    llm, sched = engine
    start_free = sched.kv_cache_manager.block_pool.get_num_free_blocks()
    errors = prompt_logprob_errors(llm, reference, prompt=prompt)
    assert sched.kv_cache_manager.block_pool.get_num_free_blocks() == start_free
    early, late = no_growth(errors, slack=2.0)
    print(
        f"MEASURED gpu {label} fp32 {len(prompt)} tokens ({len(prompt) // CACHE}x "
        f"cache): max|dlogprob|={max(errors):.3g} (before the first eviction "
        f"{max(errors[:CACHE]):.3g}), tokens 10-20%={early:.3g}, last 10%={late:.3g}"
    )
    assert max(errors) <= 1e-3, max(errors)


def test_bf16_error_not_above_stock_dense_bf16(tiny_llama, reference_logprobs):
    """bf16 vs the fp32 reference: sink stream vs stock dense at the cache length."""
    dense_prompts = [_tokens(CACHE + BLOCK, seed=100 + i) for i in range(24)]
    dense_reference = [
        _reference(tiny_llama, window=4 * CACHE)
        .stream(p, max_new_tokens=0, max_chunk=CHUNK, max_model_len=MAX_MODEL_LEN)
        .prompt_logprobs
        for p in dense_prompts
    ]
    with _engine(tiny_llama, dtype="bfloat16", enforce_eager=False) as (llm, _):
        sink = prompt_logprob_errors(llm, reference_logprobs, prompt=PROMPT)
        dense = []
        for prompt, ref in zip(dense_prompts, dense_reference, strict=True):
            errors = prompt_logprob_errors(
                llm, ref, prompt=prompt, extra_args={"kv_policy": "none"}
            )
            dense += errors[CACHE // 2 :]  # context lengths 40 .. 95
    early, late = no_growth(sink, slack=2.0)
    after_fill = sink[CACHE:]
    sink_mean, dense_mean = statistics.fmean(after_fill), statistics.fmean(dense)
    print(
        f"MEASURED gpu bf16 vs fp32 reference: sink stream mean|d|={sink_mean:.4g} "
        f"(max {max(after_fill):.3g}; 10-20% {early:.3g}, last 10% {late:.3g}); "
        f"stock dense bf16 at context 40-95 mean|d|={dense_mean:.4g} "
        f"(max {max(dense):.3g})"
    )
    assert sink_mean <= 1.2 * dense_mean, (sink_mean, dense_mean)


def test_greedy_with_cuda_graphs_and_compile(tiny_llama):
    """Default engine (torch.compile + CUDA graphs), fp32: greedy == reference."""
    prompt, n = _tokens(100, seed=3), 52 * CACHE
    expected = _reference(tiny_llama).stream(
        prompt, max_new_tokens=n, max_chunk=CHUNK, max_model_len=MAX_MODEL_LEN
    )
    with _engine(tiny_llama, enforce_eager=False, **FP32) as (llm, sched):
        out = llm.generate(
            [
                {"prompt_token_ids": prompt},
                {"prompt_token_ids": _tokens(300, seed=4)},
            ],
            [
                _sampling(max_tokens=n, logprobs=2),
                _sampling(max_tokens=200, extra_args={"kv_policy": "none"}),
            ],
        )
        held = sched.sink_stats.max_blocks_held
    ours = out[0].outputs[0]
    tops = [
        sorted(((t, lp.logprob) for t, lp in step.items()), key=lambda x: -x[1])
        for step in ours.logprobs
    ]
    first = near_tie_divergence(ours.token_ids, expected.tokens, tops, expected.top2)
    print(
        f"MEASURED gpu greedy fp32 compiled+graphs: {n} tokens, first divergence "
        f"{first}, max blocks held {held}"
    )
    assert first is None or first > n // 2
    assert len(out[1].outputs[0].token_ids) == 200
    # sinks (1) + window (4) + a chunk's blocks + the sink view: constant.
    assert held <= 1 + 4 + CHUNK // BLOCK + 1, held


def test_default_backend_is_flash_attention(tiny_llama):
    with _engine(tiny_llama, dtype="bfloat16", enforce_eager=True) as (llm, _):
        runner = llm.llm_engine.engine_core.engine_core.model_executor.driver_worker
        runner = runner.worker.model_runner
        names = {
            group.backend.get_name()
            for groups in runner.attn_groups
            for group in groups
        }
    print(f"MEASURED gpu bf16 attention backends: {sorted(names)}")
    assert names == {"FLASH_ATTN"}, names
