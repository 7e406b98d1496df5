# SPDX-License-Identifier: Apache-2.0
"""The V2 ``sample`` wrapper: absolute positions for the sampler only."""

from types import SimpleNamespace

import pytest
import torch

from vllm_sink_plugin.patches.worker.patch_model_runner_v2 import _sample


def test_sampler_sees_positions_plus_e_and_the_buffer_gets_cache_positions_back():
    """A later, smaller batch pads with stale rows of the positions buffer.

    The RoPE table reads the stock row at every padded row's position, so a
    row left at cache + E (E unbounded) indexes past the stock table: the
    device-side assert seen on an H100 after long streams.
    """
    buffer = torch.tensor([5, 6, 40, 41, 0, 0])
    seen = []

    def original(runner, hidden_states, input_batch):
        seen.append(input_batch.positions.clone())
        return "sampled"

    runner = SimpleNamespace(_sink_step_offsets=torch.tensor([0, 0, 32, 32, 0, 0]))
    batch = SimpleNamespace(positions=buffer[:6])
    assert _sample(original)(runner, None, batch) == "sampled"
    assert seen[0].tolist() == [5, 6, 72, 73, 0, 0]
    assert buffer.tolist() == [5, 6, 40, 41, 0, 0]
    assert runner._sink_step_offsets is None


def test_sampler_failure_still_restores_cache_positions():
    buffer = torch.tensor([7, 8])

    def original(runner, hidden_states, input_batch):
        raise RuntimeError("sampler failed")

    runner = SimpleNamespace(_sink_step_offsets=torch.tensor([100, 100]))
    with pytest.raises(RuntimeError, match="sampler failed"):
        _sample(original)(runner, None, SimpleNamespace(positions=buffer))
    assert buffer.tolist() == [7, 8]


def test_no_offsets_leaves_positions_alone():
    buffer = torch.tensor([1, 2])
    runner = SimpleNamespace()
    batch = SimpleNamespace(positions=buffer)
    _sample(lambda r, h, b: b.positions.tolist())(runner, None, batch)
    assert buffer.tolist() == [1, 2]
