# SPDX-License-Identifier: Apache-2.0
"""CPU attention over a cache of raw (pre-RoPE) keys.

Registered in place of ``CPU_ATTN`` (the CPU platform always picks that
member). Without the policy, and with rotated keys (the CPU default,
:mod:`vllm_sink_plugin.key_mode`), every call goes to vLLM's own kernels
unchanged. With raw keys (``--sink-exact-tokens``, or
``VLLM_SINK_ROTATED_KEYS=0``) this implementation

* writes raw K and V into the layer's cache tensor, laid out per slot as
  ``kv_cache[block, head, offset, :D] = K`` and ``[..., D:] = V``;
* for each request gathers its ``seq_len`` cached tokens through the block
  table, rotates the keys to positions ``0 .. seq_len - 1`` and attends
  causally (query ``i`` of ``n`` sits at position ``seq_len - n + i``)::

      block table row:  [ b7 | b2 | b9 ]         seq_len = 10, B = 4, n = 2
      cache position:    0-3   4-7   8 9
      keys rotated at:   0 1 2 3 4 5 6 7 8 9
      queries at:                        8 9   (rotated by the model)

With exact sinks (``--sink-exact-tokens``) it skips the masked slots of the
sink blocks and rotates the kept sinks right before the window
(:mod:`vllm_sink_plugin.attention.sink_masks`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from vllm.v1.attention.backends.cpu_attn import (
    CPUAttentionBackend,
    CPUAttentionBackendImpl,
)

from vllm_sink_plugin.attention import sink_masks
from vllm_sink_plugin.attention.rope import rotate_keys


def _raw_keys() -> bool:
    """True if the engine has the sink policy with raw keys (this backend's)."""
    from vllm.config import get_current_vllm_config

    from vllm_sink_plugin.config import StreamingSinkConfig
    from vllm_sink_plugin.key_mode import rotated_keys

    config = StreamingSinkConfig.from_mapping(
        get_current_vllm_config().additional_config
    )
    return config.enabled and not rotated_keys(config)


class StreamingSinkCpuImpl(CPUAttentionBackendImpl):
    """``CPUAttentionBackendImpl`` that caches raw keys under the sink policy."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Rotated keys are cached and attended as stock vLLM does.
        self.sink_enabled = _raw_keys()
        self.sink_rotary = None  # set by install_query_only_rope

    def do_kv_cache_update(self, layer, key, value, kv_cache, slot_mapping):
        if not self.sink_enabled:
            return super().do_kv_cache_update(layer, key, value, kv_cache, slot_mapping)
        num_tokens = slot_mapping.shape[0]
        slots = slot_mapping.long()
        valid = slots >= 0
        block_size = kv_cache.shape[2]
        head_size = key.shape[-1]
        blocks, offsets = slots[valid] // block_size, slots[valid] % block_size
        kv_cache[blocks, :, offsets, :head_size] = key[:num_tokens][valid]
        kv_cache[blocks, :, offsets, head_size:] = value[:num_tokens][valid]

    def forward(
        self, layer, query, key, value, kv_cache, attn_metadata, output, *args, **kwargs
    ):
        if not self.sink_enabled or attn_metadata is None:
            return super().forward(
                layer,
                query,
                key,
                value,
                kv_cache,
                attn_metadata,
                output,
                *args,
                **kwargs,
            )
        assert self.sink_rotary is not None, (
            "sink attention has no rotary: install_query_only_rope did not run"
        )
        head_size = self.head_size
        block_size = kv_cache.shape[2]
        query = query.view(-1, self.num_heads, head_size)
        out = output.view(-1, self.num_heads, head_size)
        masks = sink_masks.rows(attn_metadata)  # exact sinks (--sink-exact-tokens)
        starts = attn_metadata.query_start_loc.tolist()
        seq_lens = attn_metadata.seq_lens.tolist()
        for i, seq_len in enumerate(seq_lens):
            start, end = starts[i], starts[i + 1]
            num_query = end - start
            if num_query == 0:
                continue
            num_blocks = -(-seq_len // block_size)
            blocks = attn_metadata.block_table[i, :num_blocks].long()
            pages = kv_cache[blocks].transpose(1, 2)  # [nb, B, H, 2D]
            pages = pages.reshape(num_blocks * block_size, -1, 2 * head_size)
            keys = pages[:seq_len, :, :head_size]
            values = pages[:seq_len, :, head_size:]
            slots = positions = None
            if masks is not None and i < len(masks) and masks[i] is not None:
                slots, positions = sink_masks.kept_slots(seq_len, masks[i])
                keys, values = keys[slots], values[slots]
            keys = rotate_keys(self.sink_rotary, keys, positions)
            mask = None
            if num_query > 1:
                # Causal by cache slot (a masked sink slot's own query still
                # sees the sinks before it: no empty rows).
                key_slot = torch.arange(seq_len) if slots is None else slots
                query_slot = torch.arange(seq_len - num_query, seq_len)
                mask = key_slot[None, :] <= query_slot[:, None]
            result = F.scaled_dot_product_attention(
                query[start:end].transpose(0, 1).unsqueeze(0),
                keys.transpose(0, 1).unsqueeze(0),
                values.transpose(0, 1).unsqueeze(0),
                attn_mask=mask,
                scale=self.scale,
                enable_gqa=True,
            )
            out[start:end] = result[0].transpose(0, 1)
        return output


class StreamingSinkCpuBackend(CPUAttentionBackend):
    """``CPU_ATTN`` with :class:`StreamingSinkCpuImpl` as its implementation."""

    @staticmethod
    def get_impl_cls() -> type[StreamingSinkCpuImpl]:
        return StreamingSinkCpuImpl
