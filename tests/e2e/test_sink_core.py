# SPDX-License-Identifier: Apache-2.0
"""The sink policy inside the real CPU engine vs the PyTorch reference."""

import pytest

from tests.e2e.conftest import (
    MAX_CHUNK,
    MAX_MODEL_LEN,
    SINKS,
    WINDOW,
    _sampling,
    _tokens,
    no_growth,
    prompt_logprob_errors,
    tiny_engine,
)
from tests.e2e.sink_engine import (
    free_blocks,
    near_tie_divergence,
    sink_config,
    top_logprobs,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny_sink(tiny_llama):
    with tiny_engine(tiny_llama, sink_config(SINKS, WINDOW)) as engine:
        yield engine


def test_teacher_forced_prompt_logprobs_match_reference(
    tiny_sink, reference_prompt_logprobs
):
    llm, scheduler = tiny_sink
    start_free = free_blocks(scheduler)
    errors = prompt_logprob_errors(llm, reference_prompt_logprobs)
    print(f"MEASURED tiny fp32 teacher-forced max|dlogprob|={max(errors):.3g}")
    assert max(errors) <= 1e-4, max(errors)
    # No drift: keys are rotated from their raw values on every read, so the
    # error at the end of the stream is the same noise as near its start
    # (each max is over ~500 tokens of rounding noise, hence the slack).
    early, late = no_growth(errors, slack=2.0)
    print(f"MEASURED tiny fp32 max err tokens 10-20%={early:.3g} last 10%={late:.3g}")
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
    ours_top2 = top_logprobs(out)
    diverged = near_tie_divergence(out.token_ids, ref.tokens, ours_top2, ref.top2)
    print(f"MEASURED tiny greedy {n} tokens, first divergence: {diverged}")
    assert diverged is None or diverged > 0
    stats = scheduler.sink_stats
    assert stats.evicted_tokens > 0
    # ceil(S/B) + ceil(W/B) + blocks of one chunk (<= 64 tokens), + the
    # view of the sink block with rotated keys (the CPU default)
    assert stats.max_blocks_held <= 1 + 2 + 2 + scheduler.sink_rotated
