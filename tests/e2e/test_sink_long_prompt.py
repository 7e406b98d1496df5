# SPDX-License-Identifier: Apache-2.0
"""Prompts many times longer than max_model_len, vs the PyTorch reference.

The worker's token row holds max_model_len tokens, so the scheduler keeps the
prompt's tail and reveals it as the window rolls; while a tail is pending a
chunk stops one token short of the row (max_model_len 128 here makes that
rule bind: chunks of 30 tokens after a full 96-token cache).
"""

import pytest

from tests.e2e.conftest import SINKS, WINDOW, _sampling, _tokens, no_growth
from tests.e2e.sink_engine import (
    free_blocks,
    in_process_llm,
    near_tie_divergence,
    sink_config,
    top_logprobs,
)

pytestmark = pytest.mark.e2e

MAX_MODEL_LEN = 128
CHUNK = 64
PROMPT = _tokens(16 * MAX_MODEL_LEN, seed=7)  # 2048 tokens, 21x the cache


def test_long_prompt_logprobs_and_greedy_match_reference(tiny_llama, reference):
    with in_process_llm(
        tiny_llama,
        skip_tokenizer_init=True,
        max_model_len=MAX_MODEL_LEN,
        additional_config=sink_config(SINKS, WINDOW),
    ) as (llm, scheduler):
        start = free_blocks(scheduler)
        n = 256
        out = llm.generate(
            [{"prompt_token_ids": PROMPT}],
            _sampling(max_tokens=n, logprobs=2, prompt_logprobs=1),
        )[0]
        assert free_blocks(scheduler) == start
        views = scheduler.sink_rotated  # the sink block's view (rotated keys)
        assert scheduler.sink_stats.max_blocks_held <= MAX_MODEL_LEN // 32 + views
    ref = reference().stream(
        PROMPT, max_new_tokens=n, max_chunk=CHUNK, max_model_len=MAX_MODEL_LEN
    )
    ours = [out.prompt_logprobs[i][t].logprob for i, t in enumerate(PROMPT) if i]
    assert len(ours) == len(ref.prompt_logprobs) == len(PROMPT) - 1
    errors = [abs(a - b) for a, b in zip(ours, ref.prompt_logprobs, strict=True)]
    print(f"MEASURED long prompt (16x max_model_len) max|dlogprob|={max(errors):.3g}")
    assert max(errors) <= 1e-4
    no_growth(errors, slack=2.0)
    completion = out.outputs[0]
    assert len(completion.token_ids) == n
    diverged = near_tie_divergence(
        completion.token_ids, ref.tokens, top_logprobs(completion), ref.top2
    )
    assert diverged is None or diverged > 0
