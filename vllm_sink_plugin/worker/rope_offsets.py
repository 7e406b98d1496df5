# SPDX-License-Identifier: Apache-2.0
"""The worker's half of the rotated-keys design: offsets, tables, sink views.

The scheduler sends a :class:`~vllm_sink_plugin.protocol.SinkViews`
``(E, sink block ids, view block ids)`` whenever a request's offset ``E``
(tokens evicted since its cache was built) changes, and with every (re-)added
request that has ``E > 0``. Per step the runner asks for the token offsets of
its batch, fills the RoPE table from cache positions, and (Model Runner V2)
turns its positions absolute for the sampler's per-position random streams::

    batch:        req a (E=0, 3 tokens) | req b (E=32, 1 token) | padding
    positions:    5 6 7                 | 40                    | 0 0
    offsets:      0 0 0                 | 32                    | 0 0
    table rows:   stock[5..7]           | stock[40] turned by 32| stock[0]

Each sink block is copied into its view block with keys turned by ``E``
(values unchanged), always from the sink block itself, so repeated
evictions never compound rotation error.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch.profiler import record_function

from vllm_sink_plugin import protocol
from vllm_sink_plugin.attention.offset_rope import OffsetRopeTable

# Profiler ranges around the GPU work the plugin adds (benchmarks P5).
PROFILE_TABLE = "sink::rope_table"
PROFILE_VIEWS = "sink::sink_views"
PROFILE_POSITIONS = "sink::positions"


def check_layout(kv_caches: list[torch.Tensor], head_size: int) -> None:
    """The view copy needs ``[num_blocks, kv_heads, block_size, 2 * head_size]``.

    Raises:
        ValueError: another layout.
    """
    for cache in kv_caches:
        if cache.dim() != 4 or cache.shape[-1] != 2 * head_size:
            raise ValueError(
                "--kv-policy sink needs the KV layout [blocks, kv_heads, "
                f"block_size, 2 * head_size]; got {tuple(cache.shape)} "
                "(choose --attention-backend FLASH_ATTN or TRITON_ATTN)"
            )


def to_device(values, device: torch.device) -> torch.Tensor:
    """int64 host values on ``device`` without a stream sync (pinned on CUDA).

    A blocking host-to-device copy would wait for the step in flight and undo
    async scheduling's overlap.
    """
    host = torch.as_tensor(np.asarray(values, dtype=np.int64))
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


class RopeOffsets:
    """Per-request offsets of one worker, and what they drive each step."""

    def __init__(self, table: OffsetRopeTable, kv_caches: list[torch.Tensor]):
        self.table = table
        self.offsets: dict[str, int] = {}
        if kv_caches[0].is_cuda:  # one launch for all layers
            from vllm_sink_plugin.worker.view_kernel import ViewWriter as Writer
        else:  # vLLM's CPU layout, layer by layer
            from vllm_sink_plugin.worker.cpu_views import CpuViewWriter as Writer
        self.writer = Writer(kv_caches, table.rotary_dim, table.is_neox)

    def update(
        self,
        sink_views: Mapping[str, protocol.SinkViews],
        new_req_ids,
        finished_req_ids,
    ) -> None:
        """Applies one scheduler output: resets, new offsets, view copies."""
        for req_id in finished_req_ids:
            self.offsets.pop(req_id, None)
        for req_id in new_req_ids:
            # A (re-)added request starts at E = 0 unless told otherwise.
            self.offsets.pop(req_id, None)
        if not sink_views:
            return
        sinks, views, per_block = [], [], []
        for req_id, message in sink_views.items():
            self.offsets[req_id] = message.offset
            sinks += message.sink_blocks
            views += message.view_blocks
            per_block += [message.offset] * len(message.sink_blocks)
        if sinks:
            with record_function(PROFILE_VIEWS):
                self.rotate_views(sinks, views, per_block)

    def rotate_views(self, sinks: list[int], views: list[int], offsets: list[int]):
        """``cache[view] = cache[sink]`` with keys turned by each block's offset."""
        # One host-to-device copy carries the three index rows.
        src, dst, by = to_device([sinks, views, offsets], self.table.table.device)
        self.writer.write(src, dst, by, self.table.frequencies)

    def prepare(
        self, req_ids, num_scheduled: np.ndarray, positions: torch.Tensor
    ) -> torch.Tensor | None:
        """Fills the RoPE table for a step; returns its token offsets (or None).

        Args:
            req_ids: the batch's requests, in batch order.
            num_scheduled: tokens of each, same order.
            positions: the step's cache positions, padding included.
        """
        offsets = self.token_offsets(req_ids, num_scheduled, positions.shape[0])
        with record_function(PROFILE_TABLE):
            self.table.fill(positions, offsets)
        return offsets

    def token_offsets(
        self, req_ids, num_scheduled: np.ndarray, num_rows: int
    ) -> torch.Tensor | None:
        """Offsets ``[num_rows]`` of the batch's tokens, or None if all are 0."""
        if not self.offsets:
            return None
        per_req = np.fromiter(
            (self.offsets.get(r, 0) for r in req_ids),
            dtype=np.int64,
            count=len(req_ids),
        )
        if not per_req.any():
            return None
        per_token = np.zeros(num_rows, dtype=np.int64)
        tokens = np.repeat(per_req, num_scheduled[: len(req_ids)])
        per_token[: tokens.shape[0]] = tokens
        return to_device(per_token, self.table.table.device)


def install(runner, positions: torch.Tensor) -> None:
    """After ``load_model``: the model's blocks read a per-step RoPE table.

    Args:
        runner: a model runner.
        positions: its positions buffer (one table row per entry).
    """
    from vllm_sink_plugin.attention.offset_rope import install_offset_rope

    runner._sink_rope_table = install_offset_rope(
        runner.get_model(), positions.shape[0]
    )


def offsets_of(runner) -> RopeOffsets:
    """The runner's :class:`RopeOffsets`, made once its KV caches exist."""
    state = getattr(runner, "_sink_rope_offsets", None)
    if state is None:
        check_layout(runner.kv_caches, runner.model_config.get_head_size())
        state = RopeOffsets(runner._sink_rope_table, runner.kv_caches)
        runner._sink_rope_offsets = state
    return state


def apply_output(runner, scheduler_output) -> None:
    """Offsets and view blocks of one scheduler output (both runners)."""
    offsets_of(runner).update(
        protocol.read(scheduler_output).views,
        [new.req_id for new in scheduler_output.scheduled_new_reqs],
        scheduler_output.finished_req_ids
        | (scheduler_output.preempted_req_ids or set()),
    )
