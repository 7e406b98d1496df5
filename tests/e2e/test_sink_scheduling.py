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
        views = scheduler.sink_rotated  # the sink block's view (rotated keys)
        assert scheduler.sink_stats.max_blocks_held <= 1 + 2 + 1 + views
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


def test_views_without_room_preempt_and_every_stream_completes(tiny_llama, monkeypatch):
    """Rotated keys (the GPU design): views need pool blocks at the first
    eviction. With 40 sinks (2 blocks) each stream's first eviction frees one
    block but needs two views; 4 streams in step find the pool dry, so the
    scheduler preempts (lowest priority first, as vLLM does for blocks) rather
    than letting a stream decode past its window and max_model_len. Every
    stream completes, greedy-identical to the reference with the same
    preemption points, and every block (views included) returns to the pool.
    """
    monkeypatch.setenv("VLLM_SINK_ROTATED_KEYS", "1")
    sinks, max_model_len, n = 40, 5 * BLOCK, 400
    streams = [_tokens(50, 60 + i) for i in range(4)]
    with in_process_llm(
        tiny_llama,
        skip_tokenizer_init=True,
        max_model_len=max_model_len,
        num_gpu_blocks_override=17,  # 16 usable: 4 streams x (5 + 2 views) > 16
        additional_config=sink_config(sinks, WINDOW),
    ) as (llm, scheduler):
        start = free_blocks(scheduler)
        outs = llm.generate(
            [{"prompt_token_ids": p} for p in streams], _greedy(n, logprobs=2)
        )
        preemptions = {
            internal.rsplit("-", 1)[0]: points
            for internal, points in scheduler.sink_stats.preemptions.items()
        }
        assert scheduler.sink_stats.view_preemptions > 0
        assert free_blocks(scheduler) == start
        assert scheduler.num_view_blocks() == 0
    for out, prompt in zip(outs, streams, strict=True):
        got = out.outputs[0]
        assert len(got.token_ids) == n
        ref = StreamingLlamaReference(
            tiny_llama, num_sink_tokens=sinks, sink_window=WINDOW, block_size=BLOCK
        ).stream(
            prompt,
            max_new_tokens=n,
            max_chunk=CHUNK,
            max_model_len=max_model_len,
            preempt_at=tuple(preemptions.get(out.request_id, ())),
        )
        top = top_logprobs(got)
        diverged = near_tie_divergence(got.token_ids, ref.tokens, top, ref.top2)
        assert diverged is None or diverged > 0, out.request_id


def test_min_tokens_counts_the_whole_output(tiny_llama):
    """min_tokens spans evictions: stop tokens stay masked for the first
    ``min_tokens`` outputs of the stream, not of the cache (which never holds
    that many), and the request stops on one right after."""
    from collections import Counter

    from vllm import SamplingParams

    prompt, floor = _tokens(40, 5), 300  # > the 96-token cache
    with in_process_llm(
        tiny_llama,
        skip_tokenizer_init=True,
        max_model_len=256,
        additional_config=sink_config(SINKS, WINDOW),
    ) as (llm, _):
        free = llm.generate([{"prompt_token_ids": prompt}], _greedy(800))
        stop = Counter(free[0].outputs[0].token_ids[200:]).most_common(1)[0][0]
        params = SamplingParams(
            temperature=0.0, max_tokens=2000, min_tokens=floor, stop_token_ids=[stop]
        )
        out = llm.generate([{"prompt_token_ids": prompt}], params)[0].outputs[0]
    assert out.finish_reason == "stop", len(out.token_ids)
    assert floor <= len(out.token_ids) < 2000
    assert stop not in out.token_ids[:floor]


def test_a_bad_request_reaching_the_engine_core_fails_alone(tiny_llama):
    """The frontend refuses bad sink requests with 400; one that reaches the
    engine core anyway (another client of the core) is finished with an
    error at the next step, and the engine keeps serving."""
    from vllm.v1.engine import FinishReason
    from vllm.v1.request import Request

    with in_process_llm(
        tiny_llama,
        skip_tokenizer_init=True,
        max_model_len=256,
        additional_config=sink_config(SINKS, WINDOW),
    ) as (llm, scheduler):
        engine = llm.llm_engine
        core = engine.engine_core.engine_core
        start = free_blocks(scheduler)
        bad = {
            "bad-field": {"extra_args": {"sink_window": "wide"}},
            "bad-max-tokens": {"max_tokens": 2**31 - 1},
        }
        for req_id, change in bad.items():
            request = engine.input_processor.process_inputs(
                req_id,
                {"prompt_token_ids": _tokens(20, 1)},
                _greedy(8),
                supported_tasks=("generate",),
            )
            for key, value in change.items():
                setattr(request.sampling_params, key, value)
            scheduler.add_request(Request.from_engine_core_request(request, None))
        finished = {}
        for _ in range(3):
            for outputs in core.step()[0].values():
                for output in outputs.outputs:
                    finished[output.request_id] = output.finish_reason
        assert finished == dict.fromkeys(bad, FinishReason.ERROR)
        assert not scheduler.has_unfinished_requests()
        out = llm.generate([{"prompt_token_ids": _tokens(20, 2)}], _greedy(300))
        assert len(out[0].outputs[0].token_ids) == 300
        assert free_blocks(scheduler) == start
