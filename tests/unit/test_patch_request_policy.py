# SPDX-License-Identifier: Apache-2.0
"""The OpenAI-side helpers: extra_body folding and the pinned system prompt."""

import pytest

from vllm_sink_plugin.patches.frontend.patch_request_policy import (
    common_prefix_length,
    fold_extra_body,
    system_prompt_length,
)
from vllm_sink_plugin.request_policy import SinkRequestError


def _chat_request(**body):
    from vllm.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionRequest,
    )

    return ChatCompletionRequest(
        model="m", messages=[{"role": "user", "content": "hi"}], **body
    )


def test_top_level_fields_move_into_vllm_xargs():
    request = _chat_request(kv_policy="sink", sink_window=64, vllm_xargs={"x": 1})
    assert fold_extra_body(request) == {"x": 1, "kv_policy": "sink", "sink_window": 64}
    assert request.vllm_xargs["sink_window"] == 64
    assert "sink_window" not in (request.model_extra or {})
    assert fold_extra_body(request)["kv_policy"] == "sink"  # idempotent


def test_a_field_given_twice_must_agree():
    same = _chat_request(sink_window=64, vllm_xargs={"sink_window": 64})
    assert fold_extra_body(same)["sink_window"] == 64
    with pytest.raises(SinkRequestError, match="given twice") as info:
        fold_extra_body(_chat_request(sink_window=64, vllm_xargs={"sink_window": 9}))
    assert info.value.parameter == "sink_window"


def test_common_prefix_length():
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_length([], [1]) == 0


@pytest.mark.parametrize(
    "content", ["You are terse.", [{"type": "text", "text": "You are terse."}]]
)
def test_system_prompt_length_covers_the_system_message(smollm2, content):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    messages = [
        {"role": "system", "content": content},
        {"role": "user", "content": "Hi"},
    ]
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "You are terse."}, messages[1]],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer.encode(text, add_special_tokens=False)
    n = system_prompt_length(tokenizer, messages, ids)
    assert tokenizer.decode(ids[:n]).strip().endswith("You are terse.<|im_end|>")
    assert "Hi" in tokenizer.decode(ids[n:])
    assert system_prompt_length(tokenizer, messages[1:], ids) == 0
