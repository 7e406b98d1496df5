# SPDX-License-Identifier: Apache-2.0
"""Block and index arithmetic of the sink cache (no engine)."""

import pytest

from vllm_sink_plugin.core.window import SinkWindow, remove_range, split_removal


def _window(block=4, sinks=2, window=8):
    return SinkWindow.from_tokens(
        block_size=block, num_sink_tokens=sinks, sink_window=window
    )


def test_shape_rounds_up_to_blocks():
    w = _window(block=16, sinks=4, window=1020)
    assert (w.num_sink_blocks, w.num_window_blocks) == (1, 64)
    assert (w.num_sink_slots, w.num_window_slots) == (16, 1024)
    assert w.max_cached_tokens == 1040
    assert _window(sinks=0).num_sink_slots == 0


@pytest.mark.parametrize(
    ("cached", "evict"),
    [(0, 0), (12, 0), (13, 4), (14, 4), (16, 4), (17, 8), (12 + 9, 12)],
)
def test_num_tokens_to_evict(cached, evict):
    # B=4, sinks 1 block, window 2 blocks: at most 4 + 8 = 12 tokens remain.
    w = _window()
    assert w.num_tokens_to_evict(cached) == evict
    assert evict % w.block_size == 0
    assert cached - evict <= w.max_cached_tokens
    assert cached - evict > w.max_cached_tokens - w.block_size or evict == 0


def test_eviction_keeps_window_between_budget_and_one_block_less():
    w = _window(block=4, sinks=2, window=8)
    cached = 0
    for step in range(200):
        cached -= w.num_tokens_to_evict(cached)
        before = cached
        cached += 1 + step % 3  # chunks of 1..3 tokens
        assert before <= w.max_cached_tokens
        assert w.max_blocks(cached - before) >= -(-cached // w.block_size)


def test_max_blocks_bound():
    w = _window(block=32, sinks=4, window=64)
    assert w.max_blocks(1) == 1 + 2 + 1
    assert w.max_blocks(64) == 1 + 2 + 2


@pytest.mark.parametrize(
    ("num_prompt", "start", "count", "expected"),
    [
        (6, 4, 4, ((4, 2), (0, 2))),  # spans prompt and output
        (20, 4, 4, ((4, 4), (0, 0))),  # inside the prompt
        (2, 4, 4, ((2, 0), (2, 4))),  # inside the output
        (4, 4, 4, ((4, 0), (0, 4))),  # starts at the boundary
    ],
)
def test_split_removal(num_prompt, start, count, expected):
    assert split_removal(num_prompt, start, count) == expected
    tokens = list(range(num_prompt + 10))
    (ps, pc), (os_, oc) = expected
    prompt, output = tokens[:num_prompt], tokens[num_prompt:]
    joined = remove_range(prompt, ps, pc) + remove_range(output, os_, oc)
    assert joined == remove_range(tokens, start, count)


def test_remove_range_returns_a_new_list():
    tokens = [1, 2, 3, 4]
    out = remove_range(tokens, 1, 2)
    assert out == [1, 4] and tokens == [1, 2, 3, 4]
