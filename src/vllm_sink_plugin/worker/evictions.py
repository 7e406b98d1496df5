# SPDX-License-Identifier: Apache-2.0
"""The worker's half of an eviction: trim a request's token state.

The scheduler sends ``sink_evictions[req_id] = (start, count)``: cache
positions ``[start, start + count)`` of ``prompt + output`` are gone. The
request is also marked resumed, so vLLM's model runner drops it from the
persistent batch and re-adds it from this (trimmed) state with the new
block-table row: token row, ``num_prompt_tokens`` and ``num_tokens`` all
shrink by ``count``.

Prompt logprobs of a streamed prompt are written at cache positions; the
buffer is replaced by a view that starts ``evicted prompt tokens`` later, so
each chunk lands at its absolute position and the full buffer is returned.
"""

from __future__ import annotations

from vllm.v1.outputs import LogprobsTensors

from vllm_sink_plugin.core.window import remove_range, split_removal

_FULL = "sink_full_prompt_logprobs"
_OFFSET = "sink_prompt_offset"


def apply_eviction(req_state, start: int, count: int) -> None:
    """Removes cache positions ``[start, start + count)`` from a request."""
    (_, num_prompt), (out_start, num_output) = split_removal(
        req_state.num_prompt_tokens, start, count
    )
    # New lists: in-process executors share lists with the scheduler.
    req_state.prompt_token_ids = remove_range(
        req_state.prompt_token_ids, start, num_prompt
    )
    req_state.num_prompt_tokens -= num_prompt
    req_state.output_token_ids = remove_range(
        req_state.output_token_ids, out_start, num_output
    )
    if num_prompt and req_state.in_progress_prompt_logprobs_cpu is not None:
        full = getattr(req_state, _FULL, None)
        if full is None:
            full = req_state.in_progress_prompt_logprobs_cpu
            setattr(req_state, _FULL, full)
        offset = getattr(req_state, _OFFSET, 0) + num_prompt
        setattr(req_state, _OFFSET, offset)
        req_state.in_progress_prompt_logprobs_cpu = LogprobsTensors(
            full.logprob_token_ids[offset:],
            full.logprobs[offset:],
            full.selected_token_ranks[offset:],
        )


def full_prompt_logprobs(req_state, tensors):
    """The absolute-position buffer behind a (possibly offset) one."""
    return getattr(req_state, _FULL, None) or tensors
