# SPDX-License-Identifier: Apache-2.0
"""Sink views in vLLM's CPU KV layout (rotated keys on CPU).

With rotated keys the CPU engine caches and attends exactly as stock vLLM:
``ops.cpu_attn_reshape_and_cache`` writes each token and
``ops.cpu_attention_with_kv_cache`` reads the blocks. Each
``(block, kv head)`` of a layer's cache holds its keys, then its values, each
half packed in an order that depends on the kernel's ISA (``vec``, ``amx``,
``neon``...)::

    kv_cache[block, head]  (viewed as [2, block_size * head_size])
      [0]: keys,   packed: position p holds plain key element order[p]
      [1]: values                     (plain = slot * head_size + dim)

A view block is its sink block with keys turned by ``E``, so the writer must
know that order. :func:`packed_order` learns it once per layout from the
kernel itself: it caches a block of known keys (the element indices, one
base-64 digit at a time, exact in every float dtype) and reads where each
landed. Nothing is assumed about the ISA, and a layout that is not a
permutation of the keys (a quantized cache) is refused by name.
"""

from __future__ import annotations

import functools

import torch

from vllm_sink_plugin.attention.offset_rope import offset_angles, turn

# Digits small enough that bf16 (8 significant bits) holds them exactly.
_BASE = 64


@functools.cache
def packed_order(
    isa: str, dtype: torch.dtype, block_size: int, head_size: int
) -> torch.Tensor:
    """``order[p]``: the plain key element stored at packed position ``p``.

    Raises:
        ValueError: the kernel does not store the keys as a permutation.
    """
    from vllm import _custom_ops as ops

    size = block_size * head_size
    plain = torch.arange(size)
    order = torch.zeros(size, dtype=torch.long)
    scale = 1
    while scale < size:
        digits = (plain // scale % _BASE).to(dtype).view(block_size, 1, head_size)
        cache = torch.zeros(1, 1, 2 * block_size, head_size, dtype=dtype)
        key_cache, value_cache = cache.chunk(2, dim=2)
        ops.cpu_attn_reshape_and_cache(
            digits,
            torch.zeros_like(digits),
            key_cache,
            value_cache,
            torch.arange(block_size),
            isa,
            k_scale=1.0,
            v_scale=1.0,
            kv_cache_dtype="auto",
        )
        order += key_cache.reshape(size).to(torch.long) * scale
        scale *= _BASE
    if not torch.equal(order.sort().values, plain):
        raise ValueError(
            f"--kv-policy sink cannot turn keys in the CPU KV layout of ISA {isa!r} "
            f"({dtype}, block size {block_size}, head size {head_size}): it is "
            "not a permutation of the keys"
        )
    return order


class CpuViewWriter:
    """Writes view blocks (sink keys turned by ``E``) in vLLM's CPU layout.

    Args:
        kv_caches: every layer's ``[blocks, kv_heads, block_size, 2 * D]``.
        rotary_dim: the rotated leading dimensions of each head.
        is_neox: NeoX (halves) or GPT-J (interleaved) pairs.
    """

    def __init__(self, kv_caches: list[torch.Tensor], rotary_dim: int, is_neox: bool):
        from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

        self.kv_caches = kv_caches
        self.rotary_dim = rotary_dim
        self.is_neox = is_neox
        _, _, block_size, width = kv_caches[0].shape
        self.head_size = width // 2
        dtype = kv_caches[0].dtype
        isa = _get_attn_isa(dtype, block_size, self.head_size, "auto")
        self.order = packed_order(isa, dtype, block_size, self.head_size)

    def write(self, src, dst, offsets, frequencies: torch.Tensor) -> None:
        """``cache[dst] = cache[src]`` with keys turned by each block's offset.

        The same call as the CUDA writer (``view_kernel.ViewWriter``).

        Args:
            src, dst, offsets: sink and view block ids, offsets ``E``: ``[n]``.
            frequencies: float64 ``[rotary_dim / 2]``.
        """
        cos, sin = offset_angles(offsets, frequencies)
        cos, sin = cos[:, None, None, :], sin[:, None, None, :]
        rot, order = self.rotary_dim, self.order
        for cache in self.kv_caches:
            num_blocks, num_heads, block_size, _ = cache.shape
            halves = cache.view(num_blocks, num_heads, 2, block_size * self.head_size)
            blocks = halves[src]  # a copy: [n, heads, 2, block_size * D]
            packed = blocks[:, :, 0]
            plain = torch.empty_like(packed)
            plain[..., order] = packed
            keys = plain.view(-1, num_heads, block_size, self.head_size)[..., :rot]
            keys.copy_(turn(keys.float(), cos, sin, self.is_neox))
            blocks[:, :, 0] = plain[..., order]
            halves[dst] = blocks
