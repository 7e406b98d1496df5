# SPDX-License-Identifier: Apache-2.0
"""Sink views in vLLM's CPU KV layout: the probed order and the writer."""

from __future__ import annotations

import pytest
import torch
from vllm import _custom_ops as ops
from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

from vllm_sink_plugin.attention.offset_rope import turn
from vllm_sink_plugin.worker.cpu_views import CpuViewWriter, packed_order

BLOCK, HEAD, HEADS = 32, 64, 2


def _write(cache: torch.Tensor, keys, values, slots) -> None:
    """Caches tokens exactly as vLLM's CPU attention does."""
    num_blocks, heads, block, _ = cache.shape
    key_cache, value_cache = cache.view(num_blocks, heads, 2 * block, -1).chunk(
        2, dim=2
    )
    isa = _get_attn_isa(cache.dtype, block, HEAD, "auto")
    ops.cpu_attn_reshape_and_cache(
        keys, values, key_cache, value_cache, slots, isa,
        k_scale=1.0, v_scale=1.0, kv_cache_dtype="auto",
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head", [64, 128])
def test_order_is_where_the_kernel_puts_each_key(dtype, head):
    isa = _get_attn_isa(dtype, BLOCK, head, "auto")
    order = packed_order(isa, dtype, BLOCK, head)
    keys = torch.randn(BLOCK, 1, head).to(dtype)
    cache = torch.zeros(1, 1, 2 * BLOCK, head, dtype=dtype)
    key_cache, value_cache = cache.chunk(2, dim=2)
    ops.cpu_attn_reshape_and_cache(
        keys, keys, key_cache, value_cache, torch.arange(BLOCK), isa,
        k_scale=1.0, v_scale=1.0, kv_cache_dtype="auto",
    )  # fmt: skip
    assert torch.equal(key_cache.reshape(-1), keys.reshape(-1)[order])


@pytest.mark.parametrize("is_neox", [True, False])
def test_view_equals_the_sink_keys_turned_then_cached(is_neox):
    """A view written in place == the turned keys cached by the kernel."""
    torch.manual_seed(0)
    dtype, rot, offset = torch.float32, 32, 320
    keys = torch.randn(BLOCK, HEADS, HEAD)
    values = torch.randn(BLOCK, HEADS, HEAD)
    caches = [torch.zeros(4, HEADS, BLOCK, 2 * HEAD, dtype=dtype) for _ in range(2)]
    for cache in caches:
        _write(cache, keys, values, torch.arange(BLOCK) + BLOCK)  # sink: block 1
    frequencies = 1.0 / 10000 ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot)
    angles = torch.tensor([offset], dtype=torch.float64)[:, None] * frequencies
    cos, sin = angles.cos().float(), angles.sin().float()
    writer = CpuViewWriter(caches, rot, is_neox)
    writer.write(
        torch.tensor([1]), torch.tensor([3]), torch.tensor([offset]), frequencies
    )

    turned = keys.clone()
    turned[..., :rot] = turn(keys[..., :rot], cos, sin, is_neox)
    want = torch.zeros_like(caches[0])
    _write(want, turned, values, torch.arange(BLOCK) + 3 * BLOCK)
    for cache in caches:
        torch.testing.assert_close(cache[3], want[3], atol=1e-6, rtol=0)
        assert not cache[[0, 2]].any()  # nothing else written
