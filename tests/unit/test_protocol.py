# SPDX-License-Identifier: Apache-2.0
"""The scheduler -> worker messages: arithmetic, transport, attention rows."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vllm import SamplingParams
from vllm.v1.core.sched.output import SchedulerOutput

from vllm_sink_plugin import protocol
from vllm_sink_plugin.attention import sink_masks
from vllm_sink_plugin.protocol import (
    Eviction,
    SinkMask,
    SinkMessages,
    SinkViews,
    lower_min_tokens,
)


@given(
    num_prompt=st.integers(0, 40),
    num_output=st.integers(0, 40),
    start=st.integers(0, 40),
    count=st.integers(0, 40),
)
def test_trim_removes_exactly_the_range(num_prompt, num_output, start, count):
    total = num_prompt + num_output
    start, count = min(start, total), min(count, total - min(start, total))
    prompt = list(range(num_prompt))
    output = list(range(100, 100 + num_output))
    eviction = Eviction(start=start, count=count)
    new_prompt, new_output, lost_prompt, lost_output = eviction.trim(
        prompt, output, num_prompt
    )
    everything = prompt + output
    assert new_prompt + new_output == everything[:start] + everything[start + count :]
    assert (lost_prompt, lost_output) == (
        num_prompt - len(new_prompt),
        num_output - len(new_output),
    )
    assert lost_prompt + lost_output == count
    assert eviction.split(num_prompt)[0::2] == (lost_prompt, lost_output)
    assert prompt == list(range(num_prompt))  # inputs untouched: new lists


def test_revealed_tokens_follow_the_eviction():
    eviction = Eviction(start=4, count=8).with_revealed([1, 2]).with_revealed([3])
    assert eviction == Eviction(start=4, count=8, revealed=(1, 2, 3))


def test_min_tokens_counts_the_whole_output():
    params = SamplingParams(min_tokens=10, max_tokens=100)
    lowered = lower_min_tokens(params, 4)
    assert lowered.min_tokens == 6 and params.min_tokens == 10  # a copy
    assert lower_min_tokens(lowered, 50).min_tokens == 0
    assert lower_min_tokens(params, 0) is params
    assert lower_min_tokens(None, 3) is None


def test_messages_ride_a_scheduler_output_and_pickle():
    output = SchedulerOutput.make_empty()
    assert protocol.read(output) is protocol.EMPTY and not protocol.EMPTY
    protocol.attach(output, SinkMessages())  # empty: nothing attached
    assert not hasattr(output, protocol.ATTRIBUTE)
    messages = SinkMessages(
        evictions={"a": Eviction(start=32, count=64, revealed=(7,))},
        views={"a": SinkViews(offset=64, sink_blocks=(3,), view_blocks=(9,))},
        masks={"b": SinkMask(num_sinks=2, num_slots=32)},
    )
    protocol.attach(output, messages)
    # Workers get the output pickled (multiprocessing, Ray).
    assert protocol.read(pickle.loads(pickle.dumps(output))) == messages
    with pytest.raises(AttributeError):
        messages.evictions["a"].count = 1  # frozen


def test_mask_rows_ride_the_attention_metadata():
    class Metadata:
        pass

    shared, other = Metadata(), Metadata()
    masks = {"b": SinkMask(num_sinks=2, num_slots=32)}
    rows = sink_masks.batch_rows(masks, ["a", "b"])
    assert rows == [None, masks["b"]]
    assert sink_masks.batch_rows({}, ["a"]) is None
    sink_masks.attach({"layer.0": shared, "layer.1": shared}, rows)
    assert sink_masks.rows(shared) == rows and sink_masks.rows(other) is None
    ubatches = [{"layer.0": Metadata()}, {"layer.0": Metadata()}]
    sink_masks.attach(ubatches, rows)
    assert all(sink_masks.rows(u["layer.0"]) == rows for u in ubatches)


def test_kept_slots_put_sinks_before_the_window():
    slots, positions = sink_masks.kept_slots(10, SinkMask(num_sinks=2, num_slots=4))
    assert slots.tolist() == [0, 1, 4, 5, 6, 7, 8, 9]
    assert positions.tolist() == [2, 3, 4, 5, 6, 7, 8, 9]
