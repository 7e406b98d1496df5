# SPDX-License-Identifier: Apache-2.0
"""``--sink-exact-tokens``: S sinks below the block size, exactly (raw keys).

With 32-token blocks, S = 2 sinks hold one sink block; once the window rolls,
attention must see those 2 tokens and not the 30 that followed them. Checked
against the reference with the same exact sinks, next to a request of the
same batch whose sinks fill their block (nothing masked), so a mask landing
on the wrong batch row fails one of the two.
"""

import pytest

from tests.e2e.conftest import (
    BLOCK,
    MAX_CHUNK,
    MAX_MODEL_LEN,
    PROMPT,
    WINDOW,
    _sampling,
    _tokens,
    no_growth,
    output_errors,
    tiny_engine,
)
from tests.e2e.sink_engine import (
    engine_config,
    free_blocks,
    sink_config,
)
from tests.reference import StreamingLlamaReference
from vllm_sink_plugin.config import StreamingSinkConfigError

pytestmark = pytest.mark.e2e

SINKS = 2  # 30 of the sink block's 32 slots are masked once the window rolls
EXACT = {**sink_config(SINKS, WINDOW), "sink_exact_tokens": True}


@pytest.fixture(scope="module")
def exact(tiny_llama):
    with tiny_engine(tiny_llama, EXACT) as engine:
        yield engine


def _reference(model, num_sink_tokens=SINKS, exact_sinks=True):
    return StreamingLlamaReference(
        model,
        num_sink_tokens=num_sink_tokens,
        sink_window=WINDOW,
        block_size=BLOCK,
        exact_sinks=exact_sinks,
    )


def _stream(reference, prompt, max_new_tokens=0):
    return reference.stream(
        prompt,
        max_new_tokens=max_new_tokens,
        max_chunk=MAX_CHUNK,
        max_model_len=MAX_MODEL_LEN,
    )


def test_teacher_forced_two_rows(exact, tiny_llama, reference_prompt_logprobs):
    llm, scheduler = exact
    start_free = free_blocks(scheduler)
    whole = _tokens(1500, seed=7)  # S = 32: its sink block is all sinks
    expected_exact = _stream(_reference(tiny_llama), PROMPT).prompt_logprobs
    expected_whole = _stream(_reference(tiny_llama, 32), whole).prompt_logprobs
    outs = llm.generate(
        [{"prompt_token_ids": PROMPT}, {"prompt_token_ids": whole}],
        [
            _sampling(max_tokens=1, prompt_logprobs=1),
            _sampling(
                max_tokens=1, prompt_logprobs=1, extra_args={"num_sink_tokens": 32}
            ),
        ],
    )
    errors = output_errors(outs[0], PROMPT, expected_exact)
    early, late = no_growth(errors, slack=2.0)
    # The rounded policy (the 30 slots visible) is another stream: the mask
    # is what makes the match.
    rounded = max(output_errors(outs[0], PROMPT, reference_prompt_logprobs))
    whole_errors = output_errors(outs[1], whole, expected_whole)
    print(
        f"MEASURED exact sinks S={SINKS} fp32 max|dlogprob|={max(errors):.3g} "
        f"(10-20% {early:.3g}, last 10% {late:.3g}); vs the rounded policy "
        f"{rounded:.3g}; S=32 row {max(whole_errors):.3g}"
    )
    assert max(errors) <= 1e-4, max(errors)
    assert max(whole_errors) <= 1e-4, max(whole_errors)
    assert rounded > 1e-2, rounded
    assert free_blocks(scheduler) == start_free


def test_greedy_matches_reference(exact, tiny_llama):
    llm, _ = exact
    prompt, n = _tokens(150, seed=2), 512
    expected = _stream(_reference(tiny_llama), prompt, max_new_tokens=n)
    out = llm.generate([{"prompt_token_ids": prompt}], _sampling(max_tokens=n))
    assert list(out[0].outputs[0].token_ids) == expected.tokens


def test_rotated_keys_refuse_exact_sinks(tiny_llama, monkeypatch):
    monkeypatch.setenv("VLLM_SINK_ROTATED_KEYS", "1")
    with pytest.raises(StreamingSinkConfigError, match="--sink-exact-tokens"):
        engine_config(tiny_llama, additional_config=EXACT)
