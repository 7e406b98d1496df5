# SPDX-License-Identifier: Apache-2.0
"""Sink streams inside vLLM's scheduler: unbounded, mixed, under pressure."""

import pytest

from tests.e2e.conftest import _sampling, _tokens
from tests.e2e.sink_engine import (
    free_blocks,
    in_process_llm,
    near_tie_divergence,
    sink_config,
    top_logprobs,
)
from tests.reference import StreamingLlamaReference

pytestmark = pytest.mark.e2e

BLOCK, SINKS, WINDOW, CHUNK = 32, 4, 64, 64


def _greedy(max_tokens, **kwargs):
    return _sampling(max_tokens=max_tokens, **kwargs)


def test_one_stream_runs_20x_past_max_model_len(tiny_llama):
    max_model_len = 256
    with in_process_llm(
        tiny_llama,
        skip_tokenizer_init=True,
        max_model_len=max_model_len,
        additional_config=sink_config(SINKS, WINDOW),
    ) as (llm, scheduler):
        start = free_blocks(scheduler)
        n = 20 * max_model_len + 7
        out = llm.generate([{"prompt_token_ids": _tokens(40, 3)}], _greedy(n))[0]
        assert len(out.outputs[0].token_ids) == n
        assert out.outputs[0].finish_reason == "length"
        # Checked after every scheduled step, from the KV manager's block list.
        assert scheduler.sink_stats.max_blocks_held <= 1 + 2 + 1
        assert scheduler.sink_stats.evicted_tokens >= n - 96
        assert free_blocks(scheduler) == start


def test_mixed_batch_dense_requests_equal_stock_vllm(tiny_llama):
    dense = [
        (_tokens(n, seed), m)
        for seed, (n, m) in enumerate(
            [(30, 200), (300, 64), (700, 150), (5, 400)], start=10
        )
    ]

    def dense_params(m):
        return _greedy(m, logprobs=2, extra_args={"kv_policy": "none"})

    with in_process_llm(tiny_llama, skip_tokenizer_init=True, max_model_len=2048) as (
        llm,
        _,
    ):
        stock = llm.generate(
            [{"prompt_token_ids": p} for p, _ in dense],
            [_greedy(m, logprobs=2) for _, m in dense],
        )
    with in_process_llm(
        tiny_llama,
        skip_tokenizer_init=True,
        max_model_len=2048,
        additional_config=sink_config(SINKS, WINDOW),
    ) as (llm, scheduler):
        start = free_blocks(scheduler)
        sink_prompts = [_tokens(200, 20), _tokens(50, 21)]
        prompts = [{"prompt_token_ids": p} for p, _ in dense]
        prompts += [{"prompt_token_ids": p} for p in sink_prompts]
        params = [dense_params(m) for _, m in dense] + [_greedy(600), _greedy(900)]
        mixed = llm.generate(prompts, params)
        assert scheduler.sink_stats.evicted_tokens > 0
        assert free_blocks(scheduler) == start
    for ours, theirs in zip(mixed[: len(dense)], stock, strict=True):
        a, b = ours.outputs[0], theirs.outputs[0]
        top_a, top_b = top_logprobs(a), top_logprobs(b)
        assert near_tie_divergence(a.token_ids, b.token_ids, top_a, top_b) is None
    for out, n in zip(mixed[len(dense) :], (600, 900), strict=True):
        assert len(out.outputs[0].token_ids) == n


@pytest.mark.parametrize("exact", [False, True], ids=["block-sinks", "exact-sinks"])
def test_memory_pressure_preempts_and_resumes_exactly(tiny_llama, exact):
    # Equal lengths keep the 4 streams in step: each holds 3 blocks (1 sink +
    # 2 window) and needs a 4th every 32 tokens, all at once, while the pool
    # has 13 usable blocks (one is vLLM's null block): the newest stream is
    # preempted every 30 tokens, each time after its window has rolled.
    # With exact sinks the mask must survive the re-prefill after preemption.
    streams = [_tokens(40, 30 + i) for i in range(4)]
    n = 500
    config = {**sink_config(SINKS, WINDOW), "sink_exact_tokens": exact}
    with in_process_llm(
        tiny_llama,
        skip_tokenizer_init=True,
        max_model_len=13 * BLOCK,  # the most this pool admits
        num_gpu_blocks_override=14,
        additional_config=config,
    ) as (llm, scheduler):
        start = free_blocks(scheduler)
        outs = llm.generate(
            [{"prompt_token_ids": p} for p in streams], _greedy(n, logprobs=2)
        )
        # The engine core suffixes request ids ("3" -> "3-951df3e7").
        preemptions = {
            internal.rsplit("-", 1)[0]: points
            for internal, points in scheduler.sink_stats.preemptions.items()
        }
        assert free_blocks(scheduler) == start
    # Preempted after the window rolled (cache > 96 tokens), more than once.
    assert any(max(p) > 96 and len(p) > 3 for p in preemptions.values()), preemptions
    req_ids = [o.request_id for o in outs]
    for out, prompt in zip(outs, streams, strict=True):
        got = out.outputs[0]
        assert len(got.token_ids) == n
        ref = StreamingLlamaReference(
            tiny_llama,
            num_sink_tokens=SINKS,
            sink_window=WINDOW,
            block_size=BLOCK,
            exact_sinks=exact,
        ).stream(
            prompt,
            max_new_tokens=n,
            max_chunk=CHUNK,
            max_model_len=13 * BLOCK,
            preempt_at=tuple(preemptions.get(out.request_id, ())),
        )
        top = top_logprobs(got)
        diverged = near_tie_divergence(got.token_ids, ref.tokens, top, ref.top2)
        assert diverged is None or diverged > 0, (out.request_id, req_ids)


def test_opt_in_engine_runs_requests_dense_unless_they_ask(tiny_llama):
    """``--sink-request-default none``: the policy is opt-in per request."""
    max_model_len = 256
    with in_process_llm(
        tiny_llama,
        skip_tokenizer_init=True,
        max_model_len=max_model_len,
        additional_config={
            **sink_config(SINKS, WINDOW),
            "sink_request_default": "none",
        },
    ) as (llm, scheduler):
        prompt = {"prompt_token_ids": _tokens(40, 5)}
        dense, sink = llm.generate(
            [prompt, prompt],
            [_greedy(500), _greedy(500, extra_args={"kv_policy": "sink"})],
        )
        # Stock: the request stops when its cache is full at max_model_len.
        assert len(dense.outputs[0].token_ids) == max_model_len - 40
        assert len(sink.outputs[0].token_ids) == 500
        assert scheduler.sink_stats.evicted_tokens > 0
