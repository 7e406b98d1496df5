# SPDX-License-Identifier: Apache-2.0
"""Block arithmetic of one sink request's cache, in cache coordinates.

A sink request's cache is ``[sink blocks][window blocks][chunk]``. Before each
scheduled chunk, whole blocks are evicted from the front of the window while
the window holds more than ``ceil(W / B) * B`` tokens. Example with block
size B = 4, S = 2 sinks (1 sink block), W = 8 (2 window blocks), 14 tokens in
cache before the next chunk::

    cache pos:  0 1 2 3 | 4 5 6 7 | 8 9 10 11 | 12 13
    block:      sink    | window0 | window1   | window2 (partial)
                          ^^^^^^^ window = 10 tokens > 8: evict window0

    after:      0 1 2 3 | 4 5 6 7 | 8 9       <- the old 8..13, renumbered
                sink    | window  | window (partial)

    evicted tokens: cache positions [4, 8) -> num_tokens_to_evict(14) == 4

The first ``ceil(S / B) * B`` tokens are the sinks: S is rounded up to whole
blocks. Every token of a chunk sees the sinks, the ``(Wb - B, Wb]`` tokens
left in the window before the chunk (``Wb = ceil(W / B) * B``), and the
chunk's earlier tokens.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class SinkWindow:
    """The fixed shape of one sink request's cache.

    Attributes:
        block_size: B, tokens per KV block.
        num_sink_blocks: ``ceil(S / B)``; these blocks are never evicted.
        num_window_blocks: ``ceil(W / B)``; the rolling part's budget.
    """

    block_size: int
    num_sink_blocks: int
    num_window_blocks: int

    @classmethod
    def from_tokens(
        cls, *, block_size: int, num_sink_tokens: int, sink_window: int
    ) -> SinkWindow:
        return cls(
            block_size=block_size,
            num_sink_blocks=-(-num_sink_tokens // block_size),
            num_window_blocks=-(-sink_window // block_size),
        )

    @property
    def num_sink_slots(self) -> int:
        """Tokens kept as sinks (S rounded up to whole blocks)."""
        return self.num_sink_blocks * self.block_size

    @property
    def num_window_slots(self) -> int:
        """Most tokens the window keeps before a chunk (``Wb``)."""
        return self.num_window_blocks * self.block_size

    @property
    def max_cached_tokens(self) -> int:
        """Most tokens in cache right before a chunk is scheduled."""
        return self.num_sink_slots + self.num_window_slots

    def num_tokens_to_evict(self, num_cached_tokens: int) -> int:
        """Tokens to evict (whole blocks, after the sinks) before a chunk.

        Args:
            num_cached_tokens: tokens whose KV is in the cache now.

        Returns:
            A multiple of the block size; the evicted tokens are cache
            positions ``[num_sink_slots, num_sink_slots + result)``.
        """
        excess = num_cached_tokens - self.max_cached_tokens
        if excess <= 0:
            return 0
        return -(-excess // self.block_size) * self.block_size

    def max_blocks(self, num_chunk_tokens: int) -> int:
        """The bound on blocks held while a chunk of this size runs."""
        return (
            self.num_sink_blocks
            + self.num_window_blocks
            + -(-num_chunk_tokens // self.block_size)
        )


def remove_range(tokens: list[int], start: int, count: int) -> list[int]:
    """``tokens`` without ``tokens[start:start + count]``, as a new list."""
    return tokens[:start] + tokens[start + count :]


def split_removal(
    num_prompt_tokens: int, start: int, count: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Splits the evicted range of ``prompt + output`` between the two lists.

    Example: 6 prompt tokens, evict ``[4, 8)``::

        all:     p0 p1 p2 p3 p4 p5 | o0 o1 o2
                             ^^^^^   ^^^^^      evicted
        prompt:  (start 4, count 2); output: (start 0, count 2)

    Returns:
        ``((prompt_start, prompt_count), (output_start, output_count))``.
    """
    end = start + count
    prompt_start = min(start, num_prompt_tokens)
    prompt_count = min(end, num_prompt_tokens) - prompt_start
    output_start = max(start - num_prompt_tokens, 0)
    output_count = max(end - num_prompt_tokens, 0) - output_start
    return (prompt_start, prompt_count), (output_start, output_count)
