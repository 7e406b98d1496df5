# SPDX-License-Identifier: Apache-2.0
"""The transformers-based reference is right before it judges the plugin.

Two checks, no engine: on the tiny Llama it agrees with the hand-written
:class:`tests.reference.StreamingLlamaReference` over an evicting stream;
for every exact family, a stream that never evicts gives the logits of the
unmodified HF model (so the query-only RoPE and the raw-key cache change
nothing but where keys are rotated).
"""

import pytest
import torch

from tests.e2e.conftest import _tokens
from tests.models.build import build_family
from tests.models.families import EXACT
from tests.reference import StreamingLlamaReference
from tests.reference_hf import StreamingHFReference

CACHE = dict(num_sink_tokens=4, sink_window=64, block_size=32)  # 96 slots


def test_agrees_with_the_llama_reference(tiny_llama):
    prompt = _tokens(600, seed=3)
    run = dict(max_new_tokens=32, max_chunk=64, max_model_len=1024)
    ours = StreamingHFReference(tiny_llama, **CACHE).stream(prompt, **run)
    theirs = StreamingLlamaReference(tiny_llama, **CACHE).stream(prompt, **run)
    errors = [
        abs(a - b)
        for a, b in zip(ours.prompt_logprobs, theirs.prompt_logprobs, strict=True)
    ]
    assert max(errors) <= 1e-5, max(errors)
    assert ours.tokens == theirs.tokens


@pytest.mark.parametrize("family", EXACT, ids=lambda f: f.id)
def test_without_eviction_it_is_the_hf_model(family, tmp_path):
    model_dir = build_family(family, tmp_path / family.id)
    prompt = _tokens(90, seed=4)  # < 96 slots: nothing is evicted
    reference = StreamingHFReference(model_dir, **CACHE)
    chunks = [reference.forward(prompt[:50]), reference.forward(prompt[50:])]
    ours = torch.cat(chunks).log_softmax(-1)
    with torch.no_grad():
        logits = reference.model(input_ids=torch.tensor([prompt])).logits[0]
    error = (ours - logits.float().log_softmax(-1)).abs().max().item()
    assert error <= 1e-5, error
