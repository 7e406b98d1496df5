# SPDX-License-Identifier: Apache-2.0
"""Shared settings, fixtures and checks of the end-to-end sink tests."""

import random

import pytest

from tests.e2e.sink_engine import in_process_llm
from tests.reference import StreamingLlamaReference

BLOCK = 32
SINKS, WINDOW = 4, 64  # 1 sink block + 2 window blocks: a 96-token cache
MAX_CHUNK = 64  # prefill chunks are capped at one window
MAX_MODEL_LEN = 8192  # > the 50x-cache prompt; positions stay < 160


def _tokens(n, seed, vocab=512):
    rng = random.Random(seed)
    return [rng.randrange(3, vocab) for _ in range(n)]


@pytest.fixture(scope="session")
def reference(tiny_llama):
    def make():
        return StreamingLlamaReference(
            tiny_llama, num_sink_tokens=SINKS, sink_window=WINDOW, block_size=BLOCK
        )

    return make


def tiny_engine(model, additional_config):
    """The in-process tiny-Llama engine of the white-box sink tests."""
    return in_process_llm(
        model,
        skip_tokenizer_init=True,
        max_model_len=MAX_MODEL_LEN,
        max_num_batched_tokens=512,
        additional_config=additional_config,
    )


def _sampling(**kwargs):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, ignore_eos=True, **kwargs)


PROMPT = _tokens(52 * 96, seed=1)  # 52x the 96-token cache


@pytest.fixture(scope="session")
def reference_prompt_logprobs(reference):
    return (
        reference()
        .stream(
            PROMPT, max_new_tokens=0, max_chunk=MAX_CHUNK, max_model_len=MAX_MODEL_LEN
        )
        .prompt_logprobs
    )


def output_errors(out, prompt, reference_logprobs):
    """|Δlogprob| per prompt token of a finished request vs the reference."""
    ours = [out.prompt_logprobs[i][t].logprob for i, t in enumerate(prompt) if i]
    assert len(ours) == len(reference_logprobs) == len(prompt) - 1
    return [abs(a - b) for a, b in zip(ours, reference_logprobs, strict=True)]


def prompt_logprob_errors(llm, reference_logprobs, prompt=PROMPT, **extra):
    """Streams ``prompt`` teacher-forced; |Δlogprob| per token vs the reference."""
    params = _sampling(max_tokens=1, prompt_logprobs=1, **extra)
    out = llm.generate([{"prompt_token_ids": prompt}], params)[0]
    return output_errors(out, prompt, reference_logprobs)


def no_growth(errors, slack):
    """Max error over the last 10% vs over tokens 10-20% of the stream."""
    n = len(errors)
    early = max(errors[n // 10 : n // 5])
    late = max(errors[n - n // 10 :])
    assert late <= early * slack, (late, early)
    return early, late
