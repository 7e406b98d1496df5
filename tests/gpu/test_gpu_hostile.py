# SPDX-License-Identifier: Apache-2.0
"""GPU tier: the hardening cases that once crashed or could stall the GPU engine.

Model Runner V2 with async scheduling (vLLM's defaults), tiny random Llama,
block size 16. ``max_tokens=2**31-1`` killed the engine core (V2 keeps
``prompt_len + max_tokens`` in int32); it is refused now, and the engine
serves on. More sink streams than the pool holds, with views that need blocks
at each stream's first eviction, all complete and return every block.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import _sampling, _tokens
from tests.e2e.sink_engine import free_blocks, in_process_llm, sink_config

pytestmark = pytest.mark.gpu

BLOCK = 16
GPU = dict(block_size=BLOCK, seed=0, skip_tokenizer_init=True, enforce_eager=False)


def test_huge_max_tokens_is_refused_and_the_engine_serves_on(tiny_llama):
    from vllm import SamplingParams

    from vllm_sink_plugin.config import SINK_MAX_TOKENS_LIMIT
    from vllm_sink_plugin.request_policy import SinkRequestError

    prompt = {"prompt_token_ids": _tokens(40, seed=1)}
    with in_process_llm(
        tiny_llama,
        max_model_len=1024,
        kv_cache_memory_bytes=256 << 20,
        additional_config=sink_config(4, 64),
        **GPU,
    ) as (llm, sched):
        with pytest.raises(SinkRequestError, match="max_tokens=2147483647"):
            llm.generate([prompt], SamplingParams(max_tokens=2**31 - 1))
        # At the limit it runs (here it stops at once: every token stops it).
        at_limit = SamplingParams(
            max_tokens=SINK_MAX_TOKENS_LIMIT, stop_token_ids=list(range(512))
        )
        out = llm.generate([prompt], at_limit)[0].outputs[0]
        assert len(out.token_ids) == 1 and out.finish_reason == "stop"
        out = llm.generate([prompt], _sampling(max_tokens=700))[0].outputs[0]
        assert len(out.token_ids) == 700
        assert not sched.has_unfinished_requests()
    print("MEASURED gpu max_tokens 2**31-1: refused; 2**30 and 700 tokens served")


def test_more_streams_than_fit_all_complete(tiny_llama):
    """40 sinks = 3 blocks of 16: a stream's first eviction frees one block
    and needs three views; 8 streams of 11 blocks each share 39."""
    sinks, window, n = 40, 64, 600
    streams = [_tokens(60, seed=20 + i) for i in range(8)]
    with in_process_llm(
        tiny_llama,
        max_model_len=8 * BLOCK,
        num_gpu_blocks_override=40,
        max_num_batched_tokens=256,
        additional_config=sink_config(sinks, window),
        **GPU,
    ) as (llm, sched):
        start = free_blocks(sched)
        outs = llm.generate(
            [{"prompt_token_ids": p} for p in streams], _sampling(max_tokens=n)
        )
        stats = sched.sink_stats
        assert free_blocks(sched) == start
        assert sched.num_view_blocks() == 0 and not sched._sink_requests
    assert [len(o.outputs[0].token_ids) for o in outs] == [n] * len(streams)
    print(
        f"MEASURED gpu pressure: {len(streams)} streams x {n} tokens complete, "
        f"{stats.num_preemptions} preemptions ({stats.view_preemptions} for "
        f"views), {stats.evicted_blocks} blocks evicted, no block leaked"
    )
    assert stats.num_preemptions > 0
