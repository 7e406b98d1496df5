# SPDX-License-Identifier: Apache-2.0
"""The StreamingLLM reference for any RoPE family, on transformers' own code.

:class:`StreamingHFReference` runs the HF model itself (so q/k/v bias, q/k
norms, fused qkv, parallel residuals, embedding scales and every RoPE
variant are the family's own code) with two interceptions:

* the modeling module's ``apply_rotary_pos_emb`` rotates the query only, at
  the chunk's in-cache positions (HF's ``cache_position``), and hands the
  raw key on;
* :class:`RawKeyCache` stores raw keys and returns the whole cache rotated
  to positions ``0 .. L-1`` by the model's own ``rotary_emb`` (llama3, YaRN
  with its attention factor, linear, partial rotary) and the module's own
  ``apply_rotary_pos_emb``.

The schedule (eviction, chunking, preemption) is
:class:`tests.reference.StreamingReference`'s.
"""

from __future__ import annotations

import contextlib
import sys

import torch
from transformers import DynamicCache

from tests.reference import StreamingReference


class RawKeyCache(DynamicCache):
    """A ``DynamicCache`` of raw keys that returns them rotated at 0 .. L-1."""

    def __init__(self, rotary_emb, apply_rotary):
        super().__init__()
        self.rotary_emb = rotary_emb
        self.apply_rotary = apply_rotary

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = super().update(key_states, value_states, layer_idx)
        positions = torch.arange(keys.shape[-2], device=keys.device)[None]
        cos, sin = self.rotary_emb(values, positions)
        rot = cos.shape[-1]  # partial rotary: the first ``rot`` dims turn
        _, rotated = self.apply_rotary(keys[..., :rot], keys[..., :rot], cos, sin)
        return torch.cat((rotated, keys[..., rot:]), dim=-1), values

    def drop(self, start: int, end: int) -> None:
        """Removes slots ``start .. end-1`` of every layer."""
        for layer in self.layers:
            layer.keys = torch.cat(
                (layer.keys[..., :start, :], layer.keys[..., end:, :]), dim=-2
            )
            layer.values = torch.cat(
                (layer.values[..., :start, :], layer.values[..., end:, :]), dim=-2
            )


@contextlib.contextmanager
def query_only_rope(modeling):
    """Makes ``modeling.apply_rotary_pos_emb`` leave the key as it is."""
    original = modeling.apply_rotary_pos_emb

    def rotate_query(q, k, cos, sin, *args, **kwargs):
        rotated, _ = original(q, q, cos, sin, *args, **kwargs)
        return rotated, k

    modeling.apply_rotary_pos_emb = rotate_query
    try:
        yield original
    finally:
        modeling.apply_rotary_pos_emb = original


class StreamingHFReference(StreamingReference):
    """Runs one stream through any HF RoPE decoder with a sink + window cache.

    Args:
        model_dir: a local HF checkpoint.
        num_sink_tokens: S; the cache keeps ``ceil(S/B)`` whole blocks.
        sink_window: W; the window keeps at most ``ceil(W/B) * B`` tokens.
        block_size: B, the engine's block size.
        dtype: the model's dtype (fp32 for exactness checks).
    """

    def __init__(
        self,
        model_dir,
        *,
        num_sink_tokens,
        sink_window,
        block_size,
        dtype=torch.float32,
    ):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, attn_implementation="eager"
        ).eval()
        self.modeling = sys.modules[type(self.model).__module__]
        super().__init__(
            num_sink_tokens=num_sink_tokens,
            sink_window=sink_window,
            block_size=block_size,
        )
        self.reset()

    def reset(self) -> None:
        """Empties the cache (what a preempted request starts from)."""
        self.cache = RawKeyCache(
            self.model.base_model.rotary_emb, self.modeling.apply_rotary_pos_emb
        )
        self.token_ids: list[int] = []

    @property
    def cache_len(self) -> int:
        return self.cache.get_seq_length()

    def drop(self, start: int, end: int) -> None:
        self.cache.drop(start, end)

    @torch.no_grad()
    def forward(self, token_ids: list[int]) -> torch.Tensor:
        """Appends a chunk to the cache; returns its logits ``[n, vocab]``."""
        self.token_ids.extend(token_ids)
        with query_only_rope(self.modeling):
            out = self.model(
                input_ids=torch.tensor([token_ids]),
                past_key_values=self.cache,
                use_cache=True,
            )
        return out.logits[0].float()
