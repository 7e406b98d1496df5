# SPDX-License-Identifier: Apache-2.0
"""Every exact family of the support matrix vs the transformers-based reference.

One engine per family (each is its own tiny model), started and torn down in
turn in this process. A 4-sink-token, 64-token-window cache (96 slots with
32-token blocks) streams an 800-token prompt (8.3x the cache, teacher
forced) and then decodes 32 tokens greedily.

On CPU each family runs both designs: ``raw`` keys (the CPU design) and
``rotated`` keys (the GPU design, ``VLLM_SINK_ROTATED_KEYS=1``). On CUDA the
platform selects the GPU design and the test runs under FLEX_ATTENTION,
whose fp32 matmuls are exact enough for the GPU tier's 1e-3 bar.
"""

import pytest
import torch

from tests.e2e.conftest import _sampling, _tokens
from tests.e2e.sink_engine import (
    in_process_llm,
    near_tie_divergence,
    sink_config,
    top_logprobs,
)
from tests.models.build import build_family
from tests.models.families import EXACT
from tests.reference_hf import StreamingHFReference

pytestmark = pytest.mark.e2e

BLOCK, SINKS, WINDOW, CHUNK = 32, 4, 64, 64
CACHE = BLOCK + WINDOW
MAX_MODEL_LEN = 256  # YaRN's tiny config derives 256 (64 x factor 4)
PROMPT = _tokens(800, seed=5)
NEW_TOKENS = 32
CUDA = torch.cuda.is_available()
DEVICE_KWARGS = (
    dict(attention_backend="FLEX_ATTENTION", kv_cache_memory_bytes=256 << 20)
    if CUDA
    else {}
)
TOLERANCE = 1e-3 if CUDA else 1e-4
KEY_MODES = ("rotated",) if CUDA else ("raw", "rotated")


def _run_engine(model):
    params = _sampling(max_tokens=NEW_TOKENS, prompt_logprobs=1, logprobs=2)
    with in_process_llm(
        model,
        skip_tokenizer_init=True,
        max_model_len=MAX_MODEL_LEN,
        max_num_batched_tokens=256,
        additional_config=sink_config(SINKS, WINDOW),
        **DEVICE_KWARGS,
    ) as (llm, scheduler):
        out = llm.generate([{"prompt_token_ids": PROMPT}], params)[0]
        evicted = scheduler.sink_stats.evicted_tokens
    return out, evicted


@pytest.mark.parametrize("keys", KEY_MODES)
@pytest.mark.parametrize("family", EXACT, ids=lambda f: f.id)
def test_family_matches_reference(family, keys, tmp_path, monkeypatch):
    assert len(PROMPT) >= 8 * CACHE
    monkeypatch.setenv("VLLM_SINK_ROTATED_KEYS", "1" if keys == "rotated" else "0")
    model = build_family(family, tmp_path / family.id)
    out, evicted = _run_engine(model)
    assert evicted > len(PROMPT) - 2 * CACHE
    ref = StreamingHFReference(
        model, num_sink_tokens=SINKS, sink_window=WINDOW, block_size=BLOCK
    ).stream(
        PROMPT, max_new_tokens=NEW_TOKENS, max_chunk=CHUNK, max_model_len=MAX_MODEL_LEN
    )
    ours = [out.prompt_logprobs[i][t].logprob for i, t in enumerate(PROMPT) if i]
    prompt_err = max(abs(a - b) for a, b in zip(ours, ref.prompt_logprobs, strict=True))
    completion = out.outputs[0]
    ours_top2 = top_logprobs(completion)
    diverged = near_tie_divergence(
        completion.token_ids, ref.tokens, ours_top2, ref.top2
    )
    agreed = NEW_TOKENS if diverged is None else diverged
    decode_err = max(
        (
            abs(dict(ours_top2[i])[ref.tokens[i]] - ref.top2[i][0][1])
            for i in range(agreed)
        ),
        default=0.0,
    )
    print(
        f"MEASURED {family.id} {keys} keys: prompt max|dlogprob|={prompt_err:.3g} over "
        f"{len(ours)} tokens, greedy max|dlogprob|={decode_err:.3g} over "
        f"{agreed}/{NEW_TOKENS} tokens (first divergence: {diverged})"
    )
    assert prompt_err <= TOLERANCE, prompt_err
    assert decode_err <= TOLERANCE, decode_err
    assert diverged is None or diverged > 0
