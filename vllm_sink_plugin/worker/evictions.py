# SPDX-License-Identifier: Apache-2.0
"""The worker's half of an eviction: trim a request's token state.

The scheduler sends an :class:`~vllm_sink_plugin.protocol.Eviction`: cache
positions ``[start, start + count)`` of ``prompt + output`` are gone, then the
prompt tokens ``revealed`` (the next part of a prompt longer than the worker's
row) are appended to the prompt. The request is also marked
resumed, so vLLM's model runner drops it from the persistent batch and
re-adds it from this state with the new block-table row.

Prompt logprobs of a streamed prompt are written at cache positions; the
buffer is replaced by a view that starts ``evicted prompt tokens`` later, so
each chunk lands at its absolute position and the full buffer is returned.
"""

from __future__ import annotations

from vllm.v1.outputs import LogprobsTensors

from vllm_sink_plugin.protocol import Eviction, lower_min_tokens

_FULL = "sink_full_prompt_logprobs"  # absolute-position buffer (capacity)
_OFFSET = "sink_prompt_offset"  # evicted prompt tokens so far
_ROWS = "sink_prompt_rows"  # rows in use: absolute prompt length - 1


_FIELDS = ("logprob_token_ids", "logprobs", "selected_token_ranks")


def _rows(tensors: LogprobsTensors, rows: slice) -> LogprobsTensors:
    """A view of ``rows`` of a prompt-logprob buffer's three tensors."""
    return LogprobsTensors(*(getattr(tensors, field)[rows] for field in _FIELDS))


def _take_buffer(req_state) -> bool:
    """Adopts the stock prompt-logprob buffer as the full one; False if none."""
    if getattr(req_state, _FULL, None) is not None:
        return True
    tensors = req_state.in_progress_prompt_logprobs_cpu
    if tensors is None:
        return False
    setattr(req_state, _FULL, tensors)
    setattr(req_state, _OFFSET, 0)
    setattr(req_state, _ROWS, tensors.logprobs.shape[0])
    return True


def _set_view(req_state) -> None:
    """The stock code writes chunk rows at cache positions into this view::

    full:  [ evicted prompt rows | rows in cache ... ][ spare capacity ]
           ^0                    ^offset             ^rows
    """
    window = slice(getattr(req_state, _OFFSET), getattr(req_state, _ROWS))
    req_state.in_progress_prompt_logprobs_cpu = _rows(getattr(req_state, _FULL), window)


def apply_eviction(req_state, eviction: Eviction) -> None:
    """Removes the evicted cache positions from a request's token state."""
    # New lists: in-process executors share lists with the scheduler.
    prompt, output, num_prompt, num_output = eviction.trim(
        req_state.prompt_token_ids,
        req_state.output_token_ids,
        req_state.num_prompt_tokens,
    )
    req_state.prompt_token_ids = prompt
    req_state.num_prompt_tokens -= num_prompt
    req_state.output_token_ids = output
    # vLLM re-adds the request with these params.
    req_state.sampling_params = lower_min_tokens(req_state.sampling_params, num_output)
    if num_prompt and _take_buffer(req_state):
        setattr(req_state, _OFFSET, getattr(req_state, _OFFSET) + num_prompt)
        _set_view(req_state)


def reveal_prompt(req_state, revealed: tuple[int, ...]) -> None:
    """Appends the next part of a long prompt (nothing is generated yet)."""
    assert not req_state.output_token_ids, "a prompt grows before any output"
    req_state.prompt_token_ids = req_state.prompt_token_ids + list(revealed)
    req_state.num_prompt_tokens += len(revealed)
    if not _take_buffer(req_state):
        return  # allocated by the stock code at the first chunk, full size
    rows = getattr(req_state, _ROWS) + len(revealed)
    full = getattr(req_state, _FULL)
    capacity = full.logprobs.shape[0]
    if rows > capacity:
        # Doubling keeps a prompt of n tokens at O(n) copying.
        grown = LogprobsTensors.empty_cpu(
            max(rows, 2 * capacity), full.logprobs.shape[1]
        )
        for field in _FIELDS:
            getattr(grown, field)[:capacity].copy_(getattr(full, field))
        setattr(req_state, _FULL, grown)
    setattr(req_state, _ROWS, rows)
    _set_view(req_state)


def full_prompt_logprobs(req_state, tensors):
    """The absolute-position buffer behind a (possibly offset) one."""
    full = getattr(req_state, _FULL, None)
    if full is None:
        return tensors
    return _rows(full, slice(0, getattr(req_state, _ROWS)))
