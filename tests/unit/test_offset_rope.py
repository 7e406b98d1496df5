# SPDX-License-Identifier: Apache-2.0
"""RoPE at ``cache position + E`` and sink views: the rotated-keys arithmetic.

Uses vLLM's own rotary classes (``get_rope``) on CPU tensors.
"""

import copy

import pytest
import torch

from tests.helpers import build_rope
from vllm_sink_plugin.attention.offset_rope import (
    OffsetRopeTable,
    rope_frequencies,
    turn,
)


@pytest.mark.parametrize("name", ("default", "llama3", "yarn"))
def test_frequencies_reproduce_the_stock_table(name):
    rotary = build_rope(name)
    freqs = rope_frequencies(rotary)
    positions = torch.tensor([1, 7, 100, 4095], dtype=torch.float64)
    cos = (positions[:, None] * freqs).cos().float()
    stock_cos, _ = rotary.cos_sin_cache[positions.long()].chunk(2, dim=-1)
    # YaRN scales its table by mscale; the angle is what must match.
    scale = stock_cos[0, 0] / cos[0, 0]
    torch.testing.assert_close(stock_cos, cos * scale, atol=2e-4, rtol=0)


@pytest.mark.parametrize("neox", [True, False])
def test_table_row_is_cache_position_turned_by_offset(neox):
    """Row t = stock row at p_t turned by E_t = the angle of p_t + E_t."""
    rotary = build_rope("default", neox=neox)
    table = OffsetRopeTable(rotary, max_num_tokens=8)
    positions = torch.tensor([0, 5, 37, 1000])
    offsets = torch.tensor([0, 16, 4096, 10**9])
    table.fill(positions, offsets)
    angles = (positions + offsets).double()[:, None] * rope_frequencies(rotary)
    expected = torch.cat((angles.cos(), angles.sin()), dim=-1).float()
    torch.testing.assert_close(table.table[:4], expected, atol=2e-4, rtol=0)
    table.fill(positions, None)
    torch.testing.assert_close(table.table[:4], rotary.cos_sin_cache[positions])


@pytest.mark.parametrize("neox", [True, False])
def test_turning_a_cached_key_equals_rotating_at_the_later_position(neox):
    """A sink view: key rotated at j, turned by E == key rotated at j + E."""
    rotary = build_rope("default", neox=neox)
    raw = torch.randn(3, 2 * 64)  # 3 tokens, 2 heads
    query = torch.zeros(3, 64)
    j = torch.tensor([0, 1, 2])
    cached = rotary.forward_native(j, query.clone(), raw.clone())[1]
    offset = 777
    angle = offset * rope_frequencies(rotary)
    view = turn(cached.view(3, 2, 64).double(), angle.cos(), angle.sin(), neox).float()
    direct = rotary.forward_native(j + offset, query.clone(), raw.clone())[1]
    torch.testing.assert_close(view.reshape(3, -1), direct, atol=1e-4, rtol=0)


def test_position_nonlinear_rope_is_refused():
    rotary = copy.copy(build_rope("default"))  # get_rope caches: never edit its object
    rotary.__class__ = type("DynamicNTKScalingRotaryEmbedding", (type(rotary),), {})
    with pytest.raises(ValueError, match="position-linear"):
        rope_frequencies(rotary)
