# SPDX-License-Identifier: Apache-2.0
"""In-cache RoPE over keys rotated once: the design that keeps vLLM's kernels.

RoPE scores depend only on the distance between query and key. A sink
request holds ``sinks + window``; the window is contiguous and ends at the
current token, so rotating by ``cache position + E`` (``E`` = tokens evicted
since the cache was built) keeps every *window* distance equal to its
in-cache distance. Only the sinks would be ``E`` too far away, so their keys
are re-rotated by ``E`` into view blocks (:func:`rotate_sink_views`)::

    cache position c:   0 1 2 3 | 4 5 6 7 8 9        (S = 4, window 6)
    RoPE position:      0 1 2 3 | 4+E ... 9+E        (window keys: once, at write)
    sink view:          E ... 3+E                    (rotated from the sink block
                                                      at every eviction)
    query at c = 9:     9+E  ->  distance to sink j = 9 - j, to window c' = 9 - c'

Keys stay in vLLM's cache layout, rotated once when written (window) or
from the unchanged sink block (views): no rotation error accumulates, and
the attention kernel is vLLM's own (FlashAttention 3 with CUDA graphs on
GPU). The model's rotary reads a per-step cos/sin table: row ``t`` holds the
stock row of token ``t``'s cache position, turned by ``E`` (float64 angles,
so ``E`` may grow without bound).
"""

from __future__ import annotations

import copy
import types

import torch
from torch import nn

from vllm_sink_plugin.attention.rope_classes import rope_class, supported_names


def rope_frequencies(rotary: nn.Module) -> torch.Tensor:
    """The angular frequencies ``[rotary_dim // 2]`` of ``rotary``, float64.

    Raises:
        ValueError: a RoPE variant whose angle is not position x frequency.
    """
    rope = rope_class(rotary)  # see rope_classes.SUPPORTED_ROPE
    if rope is None:
        raise ValueError(
            f"--kv-policy sink needs a position-linear RoPE; "
            f"{type(rotary).__name__} is not one "
            f"(supported: {', '.join(supported_names())})"
        )
    return rope.frequencies(rotary).to(torch.float64)


def turn(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, is_neox: bool):
    """Rotates pairs of ``x [..., rot]`` by angles with ``cos``/``sin [..., rot/2]``.

    NeoX pairs dimension ``i`` with ``i + rot/2``; GPT-J pairs ``2i, 2i+1``.
    """
    if is_neox:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)


def offset_angles(
    offsets: torch.Tensor, frequencies: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (float32) of ``offsets [n] x frequencies [rot/2]``, in float64."""
    angles = offsets.to(torch.float64)[:, None] * frequencies[None, :]
    return angles.cos().float(), angles.sin().float()


class OffsetRopeTable:
    """The per-step cos/sin table one rotary reads through :class:`OffsetRotary`.

    Args:
        rotary: the model's rotary embedding (left untouched: vLLM shares
            rotary objects between engines of one process).
        max_num_tokens: rows, one per token of the largest step.
    """

    def __init__(self, rotary: nn.Module, max_num_tokens: int):
        stock = rotary.cos_sin_cache
        self.stock = stock
        self.is_neox = rotary.is_neox_style
        self.rotary_dim = rotary.rotary_dim
        self.frequencies = rope_frequencies(rotary).to(stock.device)
        self.table = torch.zeros(
            max_num_tokens, stock.shape[1], dtype=stock.dtype, device=stock.device
        )
        self.table[:] = stock[0]
        self.rotary = _twin_reading(rotary, self.table)

    def angles(self, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (float32) of ``offsets [n]`` x frequencies, ``[n, rot/2]``."""
        return offset_angles(offsets, self.frequencies)

    def fill(self, cache_positions: torch.Tensor, offsets: torch.Tensor | None):
        """Writes rows ``0 .. n-1`` for this step's tokens.

        Args:
            cache_positions: ``[n]`` int64, each token's position in its cache.
            offsets: ``[n]`` int64 tokens evicted before each token's request
                (its ``E``), or None when all are 0.
        """
        num_tokens = cache_positions.shape[0]
        rows = self.table[:num_tokens]
        if offsets is not None and rows.is_cuda:  # one launch
            from vllm_sink_plugin.attention.rope_table_kernel import fill_table

            fill_table(self.stock, rows, cache_positions, offsets, self.frequencies)
            return
        torch.index_select(self.stock, 0, cache_positions, out=rows)
        if offsets is None:
            return
        cos_p, sin_p = rows.float().chunk(2, dim=-1)
        cos_e, sin_e = self.angles(offsets)
        turned = torch.cat(
            (cos_p * cos_e - sin_p * sin_e, sin_p * cos_e + cos_p * sin_e), -1
        )
        rows.copy_(turned)


def _twin_reading(rotary: nn.Module, table: torch.Tensor) -> nn.Module:
    """A shallow copy of ``rotary`` whose cos/sin cache is ``table``."""
    twin = copy.copy(rotary)
    twin._buffers = dict(rotary._buffers)
    twin._buffers["cos_sin_cache"] = table
    method = getattr(rotary, "_forward_method", None)
    if isinstance(method, types.MethodType) and method.__self__ is rotary:
        twin._forward_method = types.MethodType(method.__func__, twin)
    else:  # a compiled forward_native: rebuild it on the twin
        twin._forward_method = twin.forward_native
    return twin


class OffsetRotary(nn.Module):
    """Replaces a block's ``rotary_emb``: token ``t`` reads table row ``t``."""

    def __init__(self, table: OffsetRopeTable):
        super().__init__()
        self.table = table
        self.twin = table.rotary
        self.register_buffer(
            "token_index",
            torch.arange(table.table.shape[0], device=table.table.device),
            persistent=False,
        )

    def forward(self, positions, query, key=None, *args, **kwargs):
        rows = self.token_index[: positions.shape[0]]
        return self.twin(rows, query, key, *args, **kwargs)


def install_offset_rope(model: nn.Module, max_num_tokens: int) -> OffsetRopeTable:
    """Gives every RoPE attention block of ``model`` an :class:`OffsetRotary`.

    Returns:
        The one table all blocks read (filled by the model runner each step).

    Raises:
        ValueError: no RoPE attention block, an unsupported RoPE, or blocks
            with different RoPE settings.
    """
    from vllm.model_executor.layers.attention import Attention

    table = None
    for name, module in model.named_modules():
        if not isinstance(getattr(module, "attn", None), Attention):
            continue
        rotary = getattr(module, "rotary_emb", None)
        if isinstance(rotary, OffsetRotary):
            return rotary.table
        if rotary is None:
            raise ValueError(f"--kv-policy sink needs RoPE; {name} has none")
        if table is None:
            table = OffsetRopeTable(rotary, max_num_tokens)
        elif not _same_rope(table, rotary):
            raise ValueError(
                f"--kv-policy sink needs one RoPE for all layers; {name} differs"
            )
        module.rotary_emb = OffsetRotary(table)
    if table is None:
        raise ValueError(
            "--kv-policy sink found no RoPE attention layer (rotary_emb + attn) "
            f"in {type(model).__name__}"
        )
    return table


def _same_rope(table: OffsetRopeTable, rotary: nn.Module) -> bool:
    return (
        rotary.rotary_dim == table.rotary_dim
        and rotary.is_neox_style == table.is_neox
        and rotary.cos_sin_cache.shape == table.stock.shape
        and torch.equal(
            rope_frequencies(rotary).to(table.frequencies.device), table.frequencies
        )
    )
