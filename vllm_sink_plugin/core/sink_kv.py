# SPDX-License-Identifier: Apache-2.0
"""The sink requests' KV blocks: whole-block evictions and view blocks.

vLLM's KV cache manager only appends blocks to a request and frees them all
when it finishes. A sink request also gives blocks back while it runs, and,
with rotated keys (GPU), holds *view* blocks: copies of its sink blocks with
keys turned by ``E``, the tokens it has evicted. This module is the only code
of the plugin that edits the manager's block lists or its block pool::

    manager row:  [ sink | w1 | w2 | w3 | w4 ]    evict(first=1, count=2)
    after:        [ sink | w3 | w4 ]              w1, w2 -> the pool's free queue
    views:        [ v ]                           take_views(1): from the pool
    worker row:   [ v    | w3 | w4 ]              worker_row(): views in front

The scheduler decides *when* (``StreamingSinkScheduler``); this module does
*what* to the blocks. It assumes one KV cache group (checked at startup).
"""

from __future__ import annotations

from collections.abc import Callable

from vllm_sink_plugin.protocol import SinkViews


class SinkKV:
    """Block operations of sink requests over vLLM's ``KVCacheManager``."""

    def __init__(self, kv_cache_manager):
        self._kv = kv_cache_manager
        (self._manager,) = kv_cache_manager.coordinator.single_type_managers
        self._pool = self._manager.block_pool

    def skip_prefix_caching(self, is_sink: Callable[[str], bool]) -> None:
        """Never hashes a sink request's blocks into the prefix cache.

        Their contents depend on what was evicted before them, so no other
        request may reuse them (this manager's coordinator only).
        """
        coordinator = self._kv.coordinator
        cache_blocks = coordinator.cache_blocks

        def cache_blocks_unless_sink(request, *args, **kwargs):
            if is_sink(request.request_id):
                return None
            return cache_blocks(request, *args, **kwargs)

        coordinator.cache_blocks = cache_blocks_unless_sink

    def evict(self, req_id: str, first_block: int, num_blocks: int) -> None:
        """Returns blocks ``[first_block, first_block + num_blocks)`` to the pool."""
        blocks = self._manager.req_to_blocks[req_id]
        evicted = blocks[first_block : first_block + num_blocks]
        del blocks[first_block : first_block + num_blocks]
        self._pool.free_blocks(evicted)

    def num_free_blocks(self) -> int:
        return self._pool.get_num_free_blocks()

    def take_views(self, views: list, need: int) -> bool:
        """Appends ``need`` new blocks to ``views``; False if the pool is short."""
        if self._pool.get_num_free_blocks() < need:
            return False
        views += self._pool.get_new_blocks(need)
        return True

    def free_views(self, views: list) -> None:
        """Returns view blocks to the pool and empties ``views``."""
        if views:
            self._pool.free_blocks(views)
            views.clear()

    def free(self, request) -> None:
        """Frees all blocks of a request (the manager's own ``free``)."""
        self._kv.free(request)

    def worker_row(self, req_id: str, views: list) -> tuple[list[int], ...]:
        """The block row the worker attends over: views in place of sinks."""
        (row,) = self._kv.get_block_ids(req_id)
        if not views:
            return (row,)
        view_ids = [block.block_id for block in views]
        return (view_ids + row[len(view_ids) :],)

    def views_message(self, req_id: str, offset: int, views: list) -> SinkViews:
        """What the worker needs to write a request's views."""
        (row,) = self._kv.get_block_ids(req_id)
        return SinkViews(
            offset=offset,
            sink_blocks=tuple(row[: len(views)]),
            view_blocks=tuple(block.block_id for block in views),
        )

    def num_blocks_held(self, req_id: str, views: list) -> int:
        """KV blocks a request holds, its views included (no list copies)."""
        return len(self._manager.req_to_blocks.get(req_id, ())) + len(views)
