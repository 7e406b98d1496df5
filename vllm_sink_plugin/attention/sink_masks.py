# SPDX-License-Identifier: Apache-2.0
"""Exact sinks: which sink-block slots attention skips, per batch row.

The scheduler sends a :class:`~vllm_sink_plugin.protocol.SinkMask`
``(S, sink slots)`` for each request whose S sinks do not fill their blocks,
once its window has rolled. The worker lays these out in batch-row order
(:func:`batch_rows`) and puts them on the step's attention metadata
(:func:`attach`); the raw-key CPU attention reads them back (:func:`rows`)
and attends over :func:`kept_slots`, with the sinks placed right before the
window in position space (RoPE only sees distances)::

    slot:       0 1 2 3 | 4 5 6 7 | 8 9      S = 2 sinks, 4 sink slots
    kept:       0 1     | 4 5 6 7 | 8 9
    position:       2 3 | 4 5 6 7 | 8 9
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from vllm_sink_plugin.protocol import SinkMask

# The attention-metadata attribute holding a step's rows.
ATTRIBUTE = "sink_mask_rows"

Rows = list[SinkMask | None]


def batch_rows(masks: Mapping[str, SinkMask], req_ids: list[str]) -> Rows | None:
    """One step's masks in batch-row order (None: no request is masked)."""
    if not masks:
        return None
    return [masks.get(req_id) for req_id in req_ids]


def attach(attn_metadata, rows: Rows | None) -> None:
    """Puts ``rows`` on every layer's metadata of a step (dict or ubatch list)."""
    if rows is None:
        return
    per_ubatch = attn_metadata if isinstance(attn_metadata, list) else [attn_metadata]
    for per_layer in per_ubatch:
        for metadata in per_layer.values():
            setattr(metadata, ATTRIBUTE, rows)


def rows(attn_metadata) -> Rows | None:
    """The ``SinkMask`` of each batch row, or None if no request is masked."""
    return getattr(attn_metadata, ATTRIBUTE, None)


def kept_slots(seq_len: int, mask: SinkMask) -> tuple[torch.Tensor, torch.Tensor]:
    """Cache slots attention keeps, and the RoPE position of each.

    Args:
        seq_len: tokens in the request's cache, this step's included.
        mask: ``(S, sink slots)``.

    Returns:
        ``(slots, positions)``: ``[0, S) + [sink slots, seq_len)``, and the
        same with the sinks moved to ``[sink slots - S, sink slots)``.
    """
    num_sinks, num_sink_slots = mask.num_sinks, mask.num_slots
    window = torch.arange(num_sink_slots, seq_len)
    slots = torch.cat((torch.arange(num_sinks), window))
    sinks_at = torch.arange(num_sink_slots - num_sinks, num_sink_slots)
    return slots, torch.cat((sinks_at, window))
