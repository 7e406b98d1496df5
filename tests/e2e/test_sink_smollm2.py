# SPDX-License-Identifier: Apache-2.0
"""Real weights: SmolLM2-135M-Instruct in fp32 vs the PyTorch reference."""

import pytest

from tests.e2e.sink_engine import (
    free_blocks,
    in_process_llm,
    near_tie_divergence,
    sink_config,
    top_logprobs,
)
from tests.reference import StreamingLlamaReference

pytestmark = pytest.mark.e2e

BLOCK, SINKS, WINDOW = 32, 4, 224  # 1 sink block + 7 window blocks: 256 tokens
CACHE = 256
MAX_MODEL_LEN = 4096
CHUNK = 224  # the default: one window


@pytest.fixture(scope="module")
def smol(smollm2):
    with in_process_llm(
        smollm2,
        max_model_len=MAX_MODEL_LEN,
        additional_config=sink_config(SINKS, WINDOW),
    ) as engine:
        yield engine


@pytest.fixture(scope="module")
def reference(smollm2):
    def make():
        return StreamingLlamaReference(
            smollm2, num_sink_tokens=SINKS, sink_window=WINDOW, block_size=BLOCK
        )

    return make


def _greedy(**kwargs):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, **kwargs)


def test_teacher_forced_shakespeare(smol, reference):
    from vllm_sink_plugin.assets import fetch

    llm, scheduler = smol
    tokenizer = llm.get_tokenizer()
    text = fetch("shakespeare").read_text(encoding="utf-8")[:60_000]
    prompt = tokenizer(text).input_ids[: 8 * CACHE + 1]  # 8x the cache
    assert len(prompt) == 8 * CACHE + 1
    start = free_blocks(scheduler)
    out = llm.generate(
        [{"prompt_token_ids": prompt}], _greedy(max_tokens=1, prompt_logprobs=1)
    )[0]
    ours = [out.prompt_logprobs[i][t].logprob for i, t in enumerate(prompt) if i]
    ref = reference().stream(
        prompt, max_new_tokens=0, max_chunk=CHUNK, max_model_len=MAX_MODEL_LEN
    )
    diff = max(abs(a - b) for a, b in zip(ours, ref.prompt_logprobs, strict=True))
    print(f"MEASURED smollm2 fp32 teacher-forced max|dlogprob|={diff:.3g}")
    assert diff <= 1e-4, diff
    assert free_blocks(scheduler) == start


def test_greedy_4096_tokens(smol, reference):
    llm, scheduler = smol
    messages = [
        {
            "role": "user",
            "content": "Tell me a very long story about a "
            "lighthouse keeper and the sea. Never stop.",
        }
    ]
    tokenizer = llm.get_tokenizer()
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    prompt = tokenizer(text, add_special_tokens=False).input_ids
    n = 4096
    out = llm.generate(
        [{"prompt_token_ids": prompt}],
        _greedy(max_tokens=n, ignore_eos=True, logprobs=2),
    )[0].outputs[0]
    assert len(out.token_ids) == n
    ref = reference().stream(
        prompt, max_new_tokens=n, max_chunk=CHUNK, max_model_len=MAX_MODEL_LEN
    )
    top = top_logprobs(out)
    diverged = near_tie_divergence(out.token_ids, ref.tokens, top, ref.top2)
    print(f"MEASURED smollm2 greedy {n} tokens, first divergence: {diverged}")
    assert diverged is None or diverged > 0
    # ceil(S/B) + ceil(W/B) + one chunk's blocks (the module's earlier test
    # streamed a prompt in 224-token chunks: 7 blocks), + the sink block's
    # view with rotated keys (the CPU default)
    views = scheduler.sink_rotated
    assert scheduler.sink_stats.max_blocks_held <= 1 + 7 + CHUNK // BLOCK + views


def test_bible_perplexity_sinks_beat_window_and_match_reference(smol, smollm2):
    """Issue 6's CI check: 4096 Bible tokens, a 4 + 252 token cache.

    With 32-token blocks the cache is 32 sink slots + 256 window slots; the
    window-only run gets the same 288 slots, all window. The reference runs
    the sink policy in plain PyTorch on the same stream.
    """
    from benchmarks.perplexity import Method, perplexity, stream_nll, text_tokens

    llm, _ = smol
    tokens = text_tokens(llm.get_tokenizer(), "bible", 4096)
    sink = Method(name="sink", cache=288, num_sink_tokens=4)
    window = Method(name="window", cache=288)
    sink_nll = stream_nll(llm, tokens, sink.extra_args(BLOCK))
    window_nll = stream_nll(llm, tokens, window.extra_args(BLOCK))
    ref = StreamingLlamaReference(
        smollm2, num_sink_tokens=4, sink_window=256, block_size=BLOCK
    ).stream(tokens, max_new_tokens=0, max_chunk=256, max_model_len=MAX_MODEL_LEN)
    ppl_sink, ppl_window = perplexity(sink_nll), perplexity(window_nll)
    ppl_ref = perplexity([-x for x in ref.prompt_logprobs])
    print(
        f"MEASURED bible 4096 tokens PPL: sink(4+252) {ppl_sink:.3f}, "
        f"window-only(288) {ppl_window:.3f} ({ppl_window / ppl_sink:.2f}x), "
        f"reference sink {ppl_ref:.3f}"
    )
    assert ppl_window >= 1.5 * ppl_sink
    assert abs(ppl_sink / ppl_ref - 1) <= 0.02
