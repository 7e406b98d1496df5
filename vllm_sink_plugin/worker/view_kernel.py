# SPDX-License-Identifier: Apache-2.0
"""One Triton launch that writes every layer's sink views.

For each (layer, view block, KV head) program: read the sink block's
``[block_size, 2D]`` slots, turn the first ``rotary_dim`` key dimensions by
the view's offset ``E`` (angle ``E * freq`` reduced modulo 2*pi in float64,
as the RoPE table does), copy the rest (values, unrotated key dims) and store
into the view block. Layers are reached through a table of base pointers, so
the cost is one launch per step whatever the depth of the model::

    cache[layer][view, head, slot, :rot] = turn(cache[layer][sink, head, slot, :rot], E)
    cache[layer][view, head, slot, rot:] =      cache[layer][sink, head, slot, rot:]
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from vllm_sink_plugin.attention.rope_table_kernel import TRITON_DTYPES, turn_angle


@triton.jit
def _turn_views_kernel(
    cache_ptrs,  # [num_layers] int64 base pointers
    sink_ids,  # [num_views] int64 block ids to read
    view_ids,  # [num_views] int64 block ids to write
    offsets_ptr,  # [num_views] int64: E of each view
    freqs_ptr,  # [ROT // 2] float64
    stride_block,
    stride_head,
    stride_slot,
    BLOCK: tl.constexpr,
    WIDTH: tl.constexpr,  # 2 * head_size
    PAD: tl.constexpr,  # next power of two >= WIDTH
    ROT: tl.constexpr,
    NEOX: tl.constexpr,
    DTYPE: tl.constexpr,
    TWO_PI: tl.constexpr,
):
    layer = tl.program_id(0)
    view = tl.program_id(1)
    head = tl.program_id(2)
    base = tl.cast(tl.load(cache_ptrs + layer), tl.pointer_type(DTYPE))
    src = tl.load(sink_ids + view) * stride_block + head * stride_head
    dst = tl.load(view_ids + view) * stride_block + head * stride_head
    slots = tl.arange(0, BLOCK)[:, None] * stride_slot
    cols = tl.arange(0, PAD)[None, :]
    inside = (cols < WIDTH) & (slots >= 0)
    x = tl.load(base + src + slots + cols, mask=inside, other=0.0).to(tl.float32)
    half: tl.constexpr = ROT // 2
    if NEOX:
        low = cols < half
        pair = tl.where(low, cols, cols - half)
        partner = tl.where(low, cols + half, cols - half)
        sign = tl.where(low, -1.0, 1.0)
    else:
        pair = cols // 2
        partner = cols ^ 1
        sign = tl.where(cols % 2 == 0, -1.0, 1.0)
    turned = (cols < ROT) & (slots >= 0)
    other = tl.load(base + src + slots + partner, mask=turned, other=0.0)
    freqs = tl.load(freqs_ptr + pair, mask=cols < ROT, other=0.0)
    angle = turn_angle(tl.load(offsets_ptr + view), freqs, TWO_PI)
    cos, sin = tl.cos(angle), tl.sin(angle)
    y = tl.where(turned, x * cos + sign * other.to(tl.float32) * sin, x)
    tl.store(base + dst + slots + cols, y.to(DTYPE), mask=inside)


class ViewWriter:
    """Writes sink views into a fixed list of same-shaped layer caches."""

    def __init__(self, kv_caches: list[torch.Tensor], rotary_dim: int, is_neox: bool):
        first = kv_caches[0]
        for cache in kv_caches:
            if cache.shape != first.shape or cache.stride() != first.stride():
                raise ValueError("--kv-policy sink needs same-shaped layer caches")
            if cache.dtype != first.dtype or cache.stride(-1) != 1:
                raise ValueError("--kv-policy sink needs unit-stride KV slots")
        self.ptrs = torch.tensor(
            [cache.data_ptr() for cache in kv_caches],
            dtype=torch.int64,
            device=first.device,
        )
        _, self.num_heads, self.block_size, self.width = first.shape
        self.strides = first.stride()[:3]
        self.dtype = TRITON_DTYPES[first.dtype]
        self.rotary_dim = rotary_dim
        self.is_neox = is_neox

    def write(self, sinks, views, offsets, frequencies: torch.Tensor) -> None:
        """``sinks``/``views``/``offsets``: int64 ``[n]``; ``frequencies``:
        float64 ``[rot/2]``."""
        grid = (self.ptrs.shape[0], sinks.shape[0], self.num_heads)
        _turn_views_kernel[grid](
            self.ptrs,
            sinks,
            views,
            offsets,
            frequencies,
            *self.strides,
            BLOCK=self.block_size,
            WIDTH=self.width,
            PAD=triton.next_power_of_2(self.width),
            ROT=self.rotary_dim,
            NEOX=self.is_neox,
            DTYPE=self.dtype,
            TWO_PI=2 * math.pi,
        )
