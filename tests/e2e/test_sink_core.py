# SPDX-License-Identifier: Apache-2.0
"""The sink policy inside the real CPU engine vs the PyTorch reference."""

import random

import pytest

from tests.e2e.sink_engine import (
    free_blocks,
    in_process_llm,
    near_tie_divergence,
    sink_config,
)
from tests.reference import StreamingLlamaReference

pytestmark = pytest.mark.e2e

BLOCK = 32
SINKS, WINDOW = 4, 64  # 1 sink block + 2 window blocks: a 96-token cache
MAX_CHUNK = 64  # prefill chunks are capped at one window
MAX_MODEL_LEN = 2048


def _tokens(n, seed, vocab=512):
    rng = random.Random(seed)
    return [rng.randrange(3, vocab) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_sink(tiny_llama):
    with in_process_llm(
        tiny_llama,
        skip_tokenizer_init=True,
        max_model_len=MAX_MODEL_LEN,
        max_num_batched_tokens=512,
        additional_config=sink_config(SINKS, WINDOW),
    ) as engine:
        yield engine


@pytest.fixture(scope="module")
def reference(tiny_llama):
    def make():
        return StreamingLlamaReference(
            tiny_llama, num_sink_tokens=SINKS, sink_window=WINDOW, block_size=BLOCK
        )

    return make


def _sampling(**kwargs):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, ignore_eos=True, **kwargs)


def test_teacher_forced_prompt_logprobs_match_reference(tiny_sink, reference):
    llm, scheduler = tiny_sink
    prompt = _tokens(12 * 96, seed=1)  # 12x the cache, streamed in chunks
    start_free = free_blocks(scheduler)
    out = llm.generate(
        [{"prompt_token_ids": prompt}], _sampling(max_tokens=1, prompt_logprobs=1)
    )[0]
    ours = [out.prompt_logprobs[i][t].logprob for i, t in enumerate(prompt) if i]
    ref = reference().stream(
        prompt, max_new_tokens=0, max_chunk=MAX_CHUNK, max_model_len=MAX_MODEL_LEN
    )
    assert len(ours) == len(ref.prompt_logprobs) == len(prompt) - 1
    diff = max(abs(a - b) for a, b in zip(ours, ref.prompt_logprobs, strict=True))
    assert diff <= 1e-4, diff
    assert free_blocks(scheduler) == start_free


def test_greedy_4096_tokens_match_reference(tiny_sink, reference):
    llm, scheduler = tiny_sink
    prompt = _tokens(150, seed=2)
    n = 4096
    out = llm.generate(
        [{"prompt_token_ids": prompt}], _sampling(max_tokens=n, logprobs=2)
    )[0].outputs[0]
    assert len(out.token_ids) == n and out.finish_reason == "length"
    ref = reference().stream(
        prompt, max_new_tokens=n, max_chunk=MAX_CHUNK, max_model_len=MAX_MODEL_LEN
    )
    ours_top2 = [[(t, lp.logprob) for t, lp in step.items()] for step in out.logprobs]
    diverged = near_tie_divergence(out.token_ids, ref.tokens, ours_top2, ref.top2)
    assert diverged is None or diverged > 0
    stats = scheduler.sink_stats
    assert stats.evicted_tokens > 0
    # ceil(S/B) + ceil(W/B) + blocks of one chunk (<= 64 tokens)
    assert stats.max_blocks_held <= 1 + 2 + 2
