# SPDX-License-Identifier: Apache-2.0
"""RoPE at ``cache position + E`` and sink views: the rotated-keys arithmetic.

Uses vLLM's own rotary classes (``get_rope``) on CPU tensors.
"""

import copy

import pytest
import torch

from vllm_sink_plugin.attention.offset_rope import (
    OffsetRopeTable,
    rope_frequencies,
    turn,
)

ROPES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "llama3": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "yarn": {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 2048,
    },
}


def _rope(name, neox=True, max_position=8192):
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope

    with set_current_vllm_config(VllmConfig()):
        return get_rope(
            64,
            max_position,
            is_neox_style=neox,
            rope_parameters=ROPES[name],
            dtype=torch.float32,
        )


@pytest.mark.parametrize("name", sorted(ROPES))
def test_frequencies_reproduce_the_stock_table(name):
    rotary = _rope(name)
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
    rotary = _rope("default", neox=neox)
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
    rotary = _rope("default", neox=neox)
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
    rotary = copy.copy(_rope("default"))  # get_rope caches: never edit its object
    rotary.__class__ = type("DynamicNTKScalingRotaryEmbedding", (type(rotary),), {})
    with pytest.raises(ValueError, match="position-linear"):
        rope_frequencies(rotary)
