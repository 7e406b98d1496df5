# SPDX-License-Identifier: Apache-2.0
"""Model Runner V2's half of an eviction: compact the request in place.

V2 keeps each request's tokens in a device row and its lengths in device
tensors that the GPU itself advances after sampling (with async scheduling
the scheduler does not know the last sampled token yet). So the eviction
``(start, count, revealed)`` is applied on the device, in stream order after
the previous step wrote its token::

    row before:  [ sinks | evicted (count) | kept ... | last sampled ]
    row after:   [ sinks | kept ... | last sampled ]           total_len -= count
                 (+ ``revealed`` prompt tokens appended during a long prompt)

``num_computed_tokens`` (device) drops by ``count``; prompt and prefill
lengths (host + device mirrors) drop by the evicted part of each; the block
row is overwritten with the scheduler's full row (views in front).
"""

from __future__ import annotations

from vllm_sink_plugin import protocol
from vllm_sink_plugin.worker.rope_offsets import to_device


def apply_evictions_v2(runner, scheduler_output) -> None:
    """Applies the step's evictions (:mod:`vllm_sink_plugin.protocol`) to V2.

    Must run before V2's ``update_requests``: the evicted requests' block
    rows are written here (overwrite) and taken out of the append path.
    """
    evictions = protocol.read(scheduler_output).evictions
    if not evictions:
        return
    states = runner.req_states
    cached = scheduler_output.scheduled_cached_reqs
    rows = {}
    new_block_ids = list(cached.new_block_ids)
    for i, req_id in enumerate(cached.req_ids):
        if req_id in evictions:
            rows[req_id], new_block_ids[i] = new_block_ids[i], None
    cached.new_block_ids = new_block_ids
    tokens = states.all_token_ids.gpu
    width = tokens.shape[1]
    for req_id, eviction in evictions.items():
        start, count, revealed = eviction.start, eviction.count, eviction.revealed
        idx = states.req_id_to_index[req_id]
        prompt_len = int(states.prompt_len.np[idx])
        prefill_len = int(states.prefill_len.np[idx])
        if count:
            row = tokens[idx]
            row[start : width - count] = row[start + count :].clone()
            states.total_len.gpu[idx] -= count
            states.num_computed_tokens.gpu[idx] -= count
            # The evicted part of each length (split at that length).
            prompt_len -= eviction.split(prompt_len)[0]
            prefill_len -= eviction.split(prefill_len)[0]
        if revealed:
            # A long prompt's next part (no output yet: it goes at the end).
            more = to_device(revealed, tokens.device)  # no stream sync
            tokens[idx, prompt_len : prompt_len + len(revealed)] = more
            states.total_len.gpu[idx] += len(revealed)
            prompt_len += len(revealed)
            prefill_len += len(revealed)
        states.prompt_len.np[idx] = prompt_len
        states.prefill_len.np[idx] = prefill_len
        if rows.get(req_id) is not None:
            runner.block_tables.append_block_ids(idx, rows[req_id], overwrite=True)
    states.prompt_len.copy_to_uva()
    states.prefill_len.copy_to_uva()
