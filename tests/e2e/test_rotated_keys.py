# SPDX-License-Identifier: Apache-2.0
"""The GPU design (rotated keys, RoPE offsets, sink views) run on the CPU.

``VLLM_SINK_ROTATED_KEYS=1`` makes the CPU engine cache keys the way the GPU
runners do: rotated once by the model, RoPE at ``cache position + E``, sink
blocks re-rotated into view blocks at each eviction. Same reference, same
bars as the raw-key tests; the view block is one more block per stream.
"""

import pytest

from tests.e2e.conftest import (
    MAX_MODEL_LEN,
    SINKS,
    WINDOW,
    _sampling,
    _tokens,
    no_growth,
    prompt_logprob_errors,
    tiny_engine,
)
from tests.e2e.sink_engine import free_blocks, sink_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rotated(tiny_llama):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_SINK_ROTATED_KEYS", "1")
        with tiny_engine(tiny_llama, sink_config(SINKS, WINDOW)) as engine:
            yield engine


def test_teacher_forced_matches_reference(rotated, reference_prompt_logprobs):
    llm, scheduler = rotated
    start_free = free_blocks(scheduler)
    errors = prompt_logprob_errors(llm, reference_prompt_logprobs)
    early, late = no_growth(errors, slack=2.0)
    print(
        f"MEASURED rotated keys fp32 max|dlogprob|={max(errors):.3g} "
        f"(10-20% {early:.3g}, last 10% {late:.3g})"
    )
    assert max(errors) <= 1e-4, max(errors)
    assert free_blocks(scheduler) == start_free  # views returned too


def test_greedy_matches_reference_and_views_stay_one_block(rotated, reference):
    llm, scheduler = rotated
    prompt, n = _tokens(150, seed=2), 1024
    expected = reference().stream(
        prompt, max_new_tokens=n, max_chunk=64, max_model_len=MAX_MODEL_LEN
    )
    out = llm.generate([{"prompt_token_ids": prompt}], _sampling(max_tokens=n))
    assert list(out[0].outputs[0].token_ids) == expected.tokens
    # Over both tests: 1 sink + 2 window + 2 prompt-chunk blocks + 1 view.
    assert scheduler.sink_stats.max_blocks_held <= 6
    assert scheduler.sink_stats.evicted_blocks > 0
    assert scheduler.num_view_blocks() == 0  # finished: views freed
