# SPDX-License-Identifier: Apache-2.0
"""Keys enter the cache *before* RoPE; attention rotates them when it reads.

With the sink policy the model's rotary embedding rotates only the query
(at its in-cache position, which is what ``positions`` holds because the
engine runs in cache coordinates). The raw key goes to the paged cache, and
the attention implementation rotates the gathered keys from their in-cache
positions ``0 .. seq_len - 1`` on every read. A key is therefore rotated
once per read from its raw value: no rotation error accumulates however
often the window rolls (prior-art.md §11).
"""

from __future__ import annotations

import torch
from torch import nn

from vllm_sink_plugin.attention.rope_classes import qualname, rope_class


class QueryOnlyRotary(nn.Module):
    """Wraps a rotary embedding so that it rotates the query only."""

    def __init__(self, rotary: nn.Module):
        super().__init__()
        self.rotary = rotary

    def forward(self, positions, query, key=None, *args, **kwargs):
        rotated, _ = self.rotary(positions, query, None, *args, **kwargs)
        return rotated, key


def rotate_keys(
    rotary: nn.Module, keys: torch.Tensor, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Rotates raw keys ``[L, H, D]`` to ``positions`` (default ``0 .. L-1``)."""
    num_tokens = keys.shape[0]
    if positions is None:
        positions = torch.arange(num_tokens, device=keys.device)
    rotated, _ = rotary.forward_native(positions, keys.reshape(num_tokens, -1))
    return rotated.view_as(keys)


def install_query_only_rope(model: nn.Module) -> int:
    """Makes every attention block of ``model`` cache raw keys.

    Each module with a ``rotary_emb`` and an ``attn`` (vLLM's ``Attention``)
    gets a :class:`QueryOnlyRotary`, and its attention implementation gets
    the original rotary as ``sink_rotary``.

    Returns:
        The number of attention layers changed.

    Raises:
        ValueError: the model uses a RoPE variant the sink policy cannot
            apply exactly, or has attention layers without a rotary.
    """
    from vllm.model_executor.layers.attention import Attention

    changed = 0
    for name, module in model.named_modules():
        attn = getattr(module, "attn", None)
        if not isinstance(attn, Attention):
            continue
        rotary = getattr(module, "rotary_emb", None)
        if isinstance(rotary, QueryOnlyRotary):
            changed += 1
            continue
        if rope_class(rotary) is None:  # see rope_classes.SUPPORTED_ROPE
            raise ValueError(
                f"--kv-policy sink needs a position-linear RoPE in every "
                f"attention layer; {name} has "
                f"{qualname(rotary) if rotary is not None else 'no rotary_emb'}"
            )
        module.rotary_emb = QueryOnlyRotary(rotary)
        attn.impl.sink_rotary = rotary
        changed += 1
    if changed == 0:
        raise ValueError(
            "--kv-policy sink found no RoPE attention layer (rotary_emb + attn) "
            f"in {type(model).__name__}"
        )
    return changed
