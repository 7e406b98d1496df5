# SPDX-License-Identifier: Apache-2.0
"""Real weights, Qwen2 family: Qwen2.5-Coder-0.5B-Instruct in fp32.

The core exactness test (teacher-forced, a stream 8x the cache, 1e-4) on the
second real model of issue 8, against the transformers-based reference (the
Llama-only reference cannot run Qwen2's q/k/v biases).
"""

import pytest

from tests.e2e.sink_engine import free_blocks, in_process_llm, sink_config
from tests.reference_hf import StreamingHFReference

pytestmark = pytest.mark.e2e

BLOCK, SINKS, WINDOW, CHUNK = 32, 4, 64, 64  # 1 sink block + 2 window blocks
CACHE = BLOCK + WINDOW
MAX_MODEL_LEN = 512


def test_teacher_forced_bible_matches_reference(qwen25):
    from vllm import SamplingParams

    from vllm_sink_plugin.assets import fetch

    text = fetch("bible").read_text(encoding="utf-8")[:20_000]
    with in_process_llm(
        qwen25,
        dtype="float32",
        max_model_len=MAX_MODEL_LEN,
        max_num_batched_tokens=256,
        additional_config=sink_config(SINKS, WINDOW),  # chunks: one window
    ) as (llm, scheduler):
        prompt = llm.get_tokenizer()(text).input_ids[: 8 * CACHE + 1]
        assert len(prompt) == 8 * CACHE + 1
        start = free_blocks(scheduler)
        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1)
        out = llm.generate([{"prompt_token_ids": prompt}], params)[0]
        evicted = scheduler.sink_stats.evicted_tokens
        assert free_blocks(scheduler) == start
    assert evicted >= len(prompt) - 2 * CACHE
    ours = [out.prompt_logprobs[i][t].logprob for i, t in enumerate(prompt) if i]
    ref = StreamingHFReference(
        qwen25, num_sink_tokens=SINKS, sink_window=WINDOW, block_size=BLOCK
    ).stream(prompt, max_new_tokens=0, max_chunk=CHUNK, max_model_len=MAX_MODEL_LEN)
    diff = max(abs(a - b) for a, b in zip(ours, ref.prompt_logprobs, strict=True))
    print(
        f"MEASURED qwen2.5-coder-0.5b fp32 teacher-forced {len(ours)} tokens "
        f"(8x a {CACHE}-token cache) max|dlogprob|={diff:.3g}"
    )
    assert diff <= 1e-4, diff
