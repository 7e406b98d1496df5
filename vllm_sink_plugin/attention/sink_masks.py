# SPDX-License-Identifier: Apache-2.0
"""Exact sinks: which sink-block slots attention skips, per batch row.

The scheduler names each request whose S sinks do not fill their blocks in
``sink_masks[req_id] = (S, sink slots)`` once its window has rolled. Before
each forward the worker lays these out in the attention metadata's row order
(:func:`set_rows`); the raw-key CPU attention reads them (:func:`rows`) and
attends over :func:`kept_slots`, with the sinks placed right before the
window in position space (RoPE only sees distances)::

    slot:       0 1 2 3 | 4 5 6 7 | 8 9      S = 2 sinks, 4 sink slots
    kept:       0 1     | 4 5 6 7 | 8 9
    position:       2 3 | 4 5 6 7 | 8 9
"""

from __future__ import annotations

import torch

_rows: list[tuple[int, int] | None] | None = None


def set_rows(masks: dict[str, tuple[int, int]] | None, req_ids: list[str]) -> None:
    """Lays out one step's masks in batch-row order (None: no masks)."""
    global _rows
    if not masks:
        _rows = None
        return
    _rows = [masks.get(req_id) for req_id in req_ids]


def rows() -> list[tuple[int, int] | None] | None:
    """This step's ``(S, sink slots)`` per batch row, or None if none masks."""
    return _rows


def kept_slots(
    seq_len: int, mask: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cache slots attention keeps, and the RoPE position of each.

    Args:
        seq_len: tokens in the request's cache, this step's included.
        mask: ``(S, sink slots)``.

    Returns:
        ``(slots, positions)``: ``[0, S) + [sink slots, seq_len)``, and the
        same with the sinks moved to ``[sink slots - S, sink slots)``.
    """
    num_sinks, num_sink_slots = mask
    window = torch.arange(num_sink_slots, seq_len)
    slots = torch.cat((torch.arange(num_sinks), window))
    sinks_at = torch.arange(num_sink_slots - num_sinks, num_sink_slots)
    return slots, torch.cat((sinks_at, window))
