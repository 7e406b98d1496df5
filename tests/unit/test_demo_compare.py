# SPDX-License-Identifier: Apache-2.0
"""demo --compare: the stock story restarts at max_model_len until the same count."""

from __future__ import annotations

from vllm_sink_plugin import demo


def test_stock_restarts_until_the_same_number_of_tokens(monkeypatch):
    asked = []

    def one_story(url, model, max_tokens, pool):
        asked.append(max_tokens)
        tokens = min(max_tokens, 990)  # stops at max_model_len
        return dict(
            tokens=tokens,
            prompt_tokens=34,
            seconds=tokens / 40,
            tok_s=40.0,
            max_kv=0.3,
            finish="length",
        )

    monkeypatch.setattr(demo, "stream_story", one_story)
    stats = demo.stream_restarting("http://x", "m", 3000, 2048)
    assert asked == [3000, 2010, 1020, 30]
    assert stats["tokens"] == 3000 and stats["restarts"] == 3
    assert stats["tok_s"] == 40.0 and stats["prompt_tokens"] == 34


def test_a_story_that_yields_nothing_ends_the_loop(monkeypatch):
    monkeypatch.setattr(
        demo,
        "stream_story",
        lambda *a: dict(
            tokens=0, prompt_tokens=1, seconds=0.0, tok_s=0.0, max_kv=0.0, finish=None
        ),
    )
    stats = demo.stream_restarting("http://x", "m", 100, 2048)
    assert stats["tokens"] == 0 and stats["tok_s"] == 0.0
