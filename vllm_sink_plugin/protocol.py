# SPDX-License-Identifier: Apache-2.0
"""What the scheduler tells the worker about sink requests, typed.

The engine core's scheduler and the worker's model runner live in different
processes (Ray workers included); vLLM carries one ``SchedulerOutput`` per
step from one to the other. The sink policy adds one attribute to it,
:data:`ATTRIBUTE`, holding a :class:`SinkMessages`; :func:`attach` sets it
and :func:`read` is the only way to get it back (a stock output reads as
:data:`EMPTY`)::

    engine core                                  worker (each rank)
    StreamingSinkScheduler.schedule()            model runner (V1 / V2)
      attach(output, SinkMessages(               read(output)
        evictions={req: Eviction},   ───────▶      .evictions -> token state
        views={req: SinkViews},                    .views     -> RoPE offsets,
        masks={req: SinkMask}))                                  view blocks
                                                   .masks     -> attention

Cache positions of one request, and what an :class:`Eviction` removes::

    before:  [ sinks | evicted: count | kept ... ]   (prompt + output)
               0       ^start          ^start + count
    after:   [ sinks | kept ... ] + revealed prompt tokens at the prompt's end
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from vllm_sink_plugin.core.window import remove_range, split_removal

# The SchedulerOutput attribute that carries a step's SinkMessages.
ATTRIBUTE = "sink_messages"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Eviction:
    """Cache positions ``[start, start + count)`` are gone; the prompt grew.

    Attributes:
        start: first evicted cache position (the sink slots come before it).
        count: evicted tokens (whole blocks; 0 when only ``revealed``).
        revealed: prompt tokens appended after the eviction, the next part
            of a prompt longer than the worker's row.
    """

    start: int
    count: int
    revealed: tuple[int, ...] = ()

    def split(self, num_prompt_tokens: int) -> tuple[int, int, int]:
        """``(prompt tokens, output start, output tokens)`` the range removes.

        The one place that splits an evicted range between a request's
        prompt and its output (scheduler, V1 and V2 workers)::

            [ prompt: num_prompt_tokens ][ output ... ]
                   [ start ...... start + count )
                   |<- prompt ->|<- output ->|
        """
        (_, num_prompt), (out_start, num_output) = split_removal(
            num_prompt_tokens, self.start, self.count
        )
        return num_prompt, out_start, num_output

    def trim(
        self, prompt_ids: list[int], output_ids: list[int], num_prompt_tokens: int
    ) -> tuple[list[int], list[int], int, int]:
        """New prompt and output lists without the range, and what each lost.

        The one implementation of "remove tokens ``[start, start + count)``"
        over a request's token lists (the scheduler's ``Request`` and V1's
        worker state; V2 shifts its device row by :meth:`split` alone).
        """
        num_prompt, out_start, num_output = self.split(num_prompt_tokens)
        return (
            remove_range(prompt_ids, self.start, num_prompt),
            remove_range(output_ids, out_start, num_output),
            num_prompt,
            num_output,
        )

    def with_revealed(self, tokens: list[int]) -> Eviction:
        """The same eviction with ``tokens`` more revealed after it."""
        return dataclasses.replace(self, revealed=(*self.revealed, *tokens))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SinkViews:
    """Rotated keys: a request's sink blocks turned by ``offset`` into views.

    Sent whenever ``offset`` changes and with every (re-)added request that
    has ``offset > 0``; the worker's block row then shows ``view_blocks`` in
    place of ``sink_blocks``::

        KV manager:  [ sink | w3 | w4 ]     views: [ v ]
        worker row:  [ v    | w3 | w4 ]     v = sink with keys turned by E

    Attributes:
        offset: ``E``, tokens evicted since the request's cache was built.
        sink_blocks: the request's sink block ids.
        view_blocks: the view block ids, one per sink block.
    """

    offset: int
    sink_blocks: tuple[int, ...]
    view_blocks: tuple[int, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SinkMask:
    """Exact sinks: attention skips sink slots ``[num_sinks, num_slots)``.

    Sent every step for each request whose window has rolled (raw keys)::

        slots:     s s x x | w3 | w4        num_sinks 2, num_slots 4
        attended:  s s       w3   w4

    Attributes:
        num_sinks: ``S``, the sink tokens attention sees.
        num_slots: the sink slots the request holds (whole blocks).
    """

    num_sinks: int
    num_slots: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class SinkMessages:
    """One step's messages, by request id (requests scheduled this step)."""

    evictions: Mapping[str, Eviction] = dataclasses.field(default_factory=dict)
    views: Mapping[str, SinkViews] = dataclasses.field(default_factory=dict)
    masks: Mapping[str, SinkMask] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.evictions or self.views or self.masks)


EMPTY = SinkMessages()


def lower_min_tokens(params, num_output: int):
    """``params`` with ``min_tokens`` lowered by evicted outputs (a copy).

    ``min_tokens`` counts a sink request's whole output, as ``max_tokens``
    does; both sides lower their own copy (the worker may share the object).
    """
    if not num_output or params is None or not params.min_tokens:
        return params
    params = params.clone()
    params.min_tokens = max(params.min_tokens - num_output, 0)
    return params


def attach(output, messages: SinkMessages) -> None:
    """Puts one step's messages on its ``SchedulerOutput`` (none if empty)."""
    if messages:
        setattr(output, ATTRIBUTE, messages)


def read(output) -> SinkMessages:
    """The messages a ``SchedulerOutput`` carries (:data:`EMPTY` if none)."""
    return getattr(output, ATTRIBUTE, EMPTY)
