# SPDX-License-Identifier: Apache-2.0
"""The engine-core side of the sink policy: a ``Scheduler`` subclass.

Installed through vLLM's ``scheduler_cls`` hook. A sink request lives in
*cache coordinates*: when its window rolls, the evicted tokens are removed
from the request itself (prompt/output/all-token lists, ``num_computed_tokens``,
``num_prompt_tokens``), its evicted blocks are removed from the KV manager's
block list and returned to the pool, and ``max_tokens`` is lowered by the
evicted outputs so that "outputs generated >= max_tokens" still counts all
of them. Everything downstream (max_model_len caps, block allocation, the
worker's positions, slot mapping and token rows) then sees a request that is
never longer than its cache, and RoPE positions are in-cache positions.

Per step::

    schedule():
      1. for each running sink request: evict whole blocks after the sinks
         while the window exceeds its budget (SinkWindow.num_tokens_to_evict)
      2. vLLM's schedule() as is
      3. for each scheduled request with evictions not yet sent to the
         worker: mark it "resumed" with its full block list and attach an
         ``Eviction(start, count)`` to the SchedulerOutput
         (:mod:`vllm_sink_plugin.protocol`), so the worker replaces the
         block-table row and trims its token state

Block lists and view blocks are changed only through
:class:`~vllm_sink_plugin.core.sink_kv.SinkKV`; each sink request's state is
one :class:`SinkRequestState`.

With rotated keys (GPU; :mod:`vllm_sink_plugin.key_mode`) a request that has
evicted ``E > 0`` tokens also holds *view* blocks, copies of its sink blocks
with keys turned by ``E`` (written by the worker). The worker's row shows
the views in place of the sinks::

    KV manager:   [ sink | w3 | w4 | w5 ]        views: [ v ]
    worker row:   [ v    | w3 | w4 | w5 ]        SinkViews(E, [sink], [v])

With ``--sink-exact-tokens`` (raw keys only) a request whose S sinks do not
fill their blocks gets a ``SinkMask(S, sink slots)`` in every step after its
first eviction (preemption included): the worker's attention then skips sink
slots ``[S, sink slots)``::

    KV manager:   [ s s x x | w3 | w4 ]          SinkMask(2, 4)
    attended:       s s       w3   w4

Model Runner V2 applies the same message on the device (its token row and
lengths live there; with async scheduling the GPU holds the last sampled
token), see ``vllm_sink_plugin.worker.evictions_v2``.
:class:`StreamingSinkAsyncScheduler` is the same policy over vLLM's
``AsyncScheduler`` (V2 only): eviction before a step counts every token
scheduled before it, the step still in flight included, exactly as the
synchronous scheduler (and the reference) do.
"""

from __future__ import annotations

import dataclasses
import time

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.request_queue import SchedulingPolicy
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from vllm_sink_plugin.config import StreamingSinkConfig
from vllm_sink_plugin.core.sink_kv import SinkKV
from vllm_sink_plugin.core.window import SinkWindow
from vllm_sink_plugin.key_mode import rotated_keys
from vllm_sink_plugin.log import init_logger
from vllm_sink_plugin.protocol import (
    Eviction,
    SinkMask,
    SinkMessages,
    attach,
    lower_min_tokens,
)
from vllm_sink_plugin.request_policy import (
    SinkRequestError,
    check_sizes,
    resolve,
    sink_fields,
)

logger = init_logger(__name__)

# A length no request reaches: lifts check_stop's max_model_len test.
_UNBOUNDED = 1 << 62


@dataclasses.dataclass
class StreamingSinkStats:
    """Counters of what the policy did, for tests and metrics."""

    evicted_blocks: int = 0
    evicted_tokens: int = 0
    max_blocks_held: int = 0
    num_preemptions: int = 0
    # preemptions made to free blocks for views (rotated keys)
    view_preemptions: int = 0
    # req_id -> outputs generated (all, evicted included) at each preemption
    preemptions: dict[str, list[int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(kw_only=True)
class SinkRequestState:
    """Everything the scheduler keeps for one sink request.

    Fixed when it arrives:

    Attributes:
        window: the block shape of its cache.
        max_chunk: most prompt tokens it runs in one step.
        fields: its per-request sink fields (a streaming-input session keeps
            those of its first input).
        mask: exact sinks that leave sink slots for attention to skip once
            the window rolls; None otherwise.

    Changing as it runs:

    Attributes:
        unsent: the eviction (and revealed prompt) not yet sent to the worker.
        pending: prompt tokens beyond what the worker's row can hold.
        evicted_outputs: output tokens evicted so far (all of its life).
        offset: rotated keys: ``E``, tokens evicted since its cache was built
            (0 after a preemption: it re-prefills).
        views: rotated keys: pool blocks holding its sinks turned by
            ``offset`` (:class:`SinkKV` takes and frees them).
        masked: its mask is sent each step (it has evicted).
    """

    window: SinkWindow
    max_chunk: int
    fields: dict
    mask: SinkMask | None
    unsent: Eviction | None = None
    pending: list[int] = dataclasses.field(default_factory=list)
    evicted_outputs: int = 0
    offset: int = 0
    views: list = dataclasses.field(default_factory=list)
    masked: bool = False


class StreamingSinkScheduler(Scheduler):
    """vLLM's ``Scheduler`` keeping sink requests in cache coordinates."""

    def __init__(self, vllm_config, kv_cache_config, *args, **kwargs):
        super().__init__(vllm_config, kv_cache_config, *args, **kwargs)
        groups = kv_cache_config.kv_cache_groups
        if len(groups) != 1:
            raise ValueError(
                f"--kv-policy sink needs one KV cache group, got {len(groups)}"
            )
        self.sink_config = StreamingSinkConfig.from_mapping(
            vllm_config.additional_config
        )
        self.sink_block_size = groups[0].kv_cache_spec.block_size
        # The frontend checked the policy against the block size and
        # max_model_len it knew; both can change later (attention backends'
        # block-size rules, --max-model-len -1 fitted to the KV memory), so
        # the engine's final geometry is checked again before any request.
        self.sink_config.check_engine(
            block_size=self.sink_block_size, max_model_len=self.max_model_len
        )
        self.sink_stats = StreamingSinkStats()
        self.sink_rotated = rotated_keys(self.sink_config)
        self.sink_kv = SinkKV(self.kv_cache_manager)
        self._sink_requests: dict[str, SinkRequestState] = {}
        # req_id -> token tail taken off for the length of one schedule()
        self._sink_hidden: dict[str, list[int]] = {}
        # Evicted blocks hold keys no other request may reuse.
        self.sink_kv.skip_prefix_caching(self._sink_requests.__contains__)
        logger.info(
            "StreamingSinkScheduler: block size %d, %d sink tokens, window %d, "
            "prefill chunks <= %d, requests default to policy %r",
            self.sink_block_size,
            self.sink_config.num_sink_tokens,
            self.sink_config.sink_window,
            self.sink_config.prefill_chunk(self.sink_block_size),
            self.sink_config.sink_request_default,
        )

    # -- which requests --------------------------------------------------

    def _policy_for(self, request: Request) -> StreamingSinkConfig | None:
        """The request's effective policy, or None when it runs as stock."""
        if request.pooling_params is not None:
            return None
        return resolve(
            self.sink_config,
            request.sampling_params and request.sampling_params.extra_args,
            block_size=self.sink_block_size,
            max_model_len=self.max_model_len,
        )

    def add_request(self, request: Request) -> None:
        """Adds a request; one the policy cannot run fails alone, never raises.

        The frontend refuses bad sink requests with HTTP 400 before they get
        here; one that still arrives (another frontend, a direct engine-core
        client) is finished with ``FinishReason.ERROR`` at the next step, and
        every other request carries on.
        """
        if request.request_id not in self.requests:
            try:
                policy = self._checked_policy(request)
            except Exception as error:
                self._refuse(request, error)
                return
            if policy is not None:
                # Evicted blocks hold keys no other request may reuse: a sink
                # request neither reads nor fills the prefix cache.
                request.skip_reading_prefix_cache = True
                request._block_hasher = None
                request.block_hashes = []
                req_id = request.request_id
                window = SinkWindow.from_tokens(
                    block_size=self.sink_block_size,
                    num_sink_tokens=policy.num_sink_tokens,
                    sink_window=policy.sink_window,
                )
                masked = policy.num_masked_sink_slots(self.sink_block_size)
                slots = window.num_sink_slots
                self._sink_requests[req_id] = SinkRequestState(
                    window=window,
                    max_chunk=policy.prefill_chunk(self.sink_block_size),
                    fields=sink_fields(request.sampling_params.extra_args),
                    mask=SinkMask(num_sinks=slots - masked, num_slots=slots)
                    if masked
                    else None,
                )
                self._defer_prompt_tail(request)
        super().add_request(request)

    def _checked_policy(self, request: Request) -> StreamingSinkConfig | None:
        """The request's policy, after the checks the frontend also makes.

        Raises:
            SinkRequestError: a bad field, prompt embeddings, or a size over
                the limits of ``request_policy.check_sizes``.
        """
        policy = self._policy_for(request)
        if policy is None:
            return None
        if request.prompt_token_ids is None or request.prompt_embeds is not None:
            raise SinkRequestError(
                "prompt_embeds: --kv-policy sink needs token prompts (evictions "
                "work on token ids), not prompt embeddings",
                parameter="prompt_embeds",
            )
        if request.mm_features:
            raise SinkRequestError(
                "multimodal inputs: their placeholders are absolute prompt "
                "offsets, which evictions would break",
                parameter="multi_modal_data",
            )
        params = request.sampling_params
        check_sizes(
            policy,
            max_tokens=request.max_tokens,
            prompt_len=request.num_prompt_tokens,
            prompt_logprobs=params.prompt_logprobs if params is not None else None,
        )
        return policy

    def _refuse(self, request: Request, error: Exception) -> None:
        """Finishes ``request`` with an error at the next step, alone.

        It is parked in a blocked waiting state that ``schedule()`` never
        promotes, and named in ``grammar_compile_error_reqs``, the set whose
        requests vLLM's ``update_from_output`` finishes with
        ``FINISHED_ERROR`` (and reports to their client).
        """
        logger.warning(
            "Request %s finished with an error by the sink policy: %s",
            request.request_id,
            error,
        )
        request.structured_output_request = None
        request.status = RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR
        super().add_request(request)
        errors = self.grammar_compile_error_reqs
        if isinstance(errors, dict):  # vLLM 0.33: the error reaches the client
            errors[request.request_id] = _request_error(str(error))
        else:  # vLLM 0.32: a set of ids
            errors.add(request.request_id)

    def _defer_prompt_tail(self, request: Request) -> None:
        """Keeps the prompt beyond ``max_model_len - 1`` tokens in the scheduler.

        The worker's token row has ``max_model_len`` slots; the rest of a
        long prompt is revealed as the window rolls (``_reveal_prompt``)::

            prompt:  [ visible: max_model_len - 1 ][ pending ... ]
        """
        limit = self.max_model_len - 1
        if request.num_tokens <= limit or request.num_output_tokens:
            return
        tail = request._all_token_ids[limit:]
        del request._all_token_ids[limit:]
        cut = len(tail)
        request.prompt_token_ids = request.prompt_token_ids[
            : len(request.prompt_token_ids) - cut
        ]
        request.num_prompt_tokens -= cut
        sink = self._sink_requests[request.request_id]
        sink.pending = tail + sink.pending

    def _reveal_prompt(self, request: Request, sink: SinkRequestState) -> None:
        """Moves pending prompt tokens into the request, up to its row."""
        room = self.max_model_len - 1 - request.num_tokens
        if not sink.pending or room <= 0:
            return
        revealed = sink.pending[:room]
        del sink.pending[:room]
        request.prompt_token_ids = request.prompt_token_ids + revealed
        request._all_token_ids.extend(revealed)
        request.num_prompt_tokens += len(revealed)
        unsent = sink.unsent or Eviction(start=0, count=0)
        sink.unsent = unsent.with_revealed(revealed)

    def _update_request_as_session(self, session: Request, update) -> None:
        # A streaming-input session keeps the cache shape of its first input.
        req_id = session.request_id
        if req_id in self._sink_requests and update.sampling_params is not None:
            fields = sink_fields(update.sampling_params.extra_args)
            first = self._sink_requests[req_id].fields
            if fields and fields != first:
                logger.warning(
                    "Session %s: sink settings %s of a later input differ from "
                    "its first input's %s; the session keeps the first ones",
                    req_id,
                    fields,
                    first,
                )
        super()._update_request_as_session(session, update)
        if req_id in self._sink_requests:
            self._defer_prompt_tail(session)

    # -- scheduling --------------------------------------------------------

    def schedule(self, *args, **kwargs) -> SchedulerOutput:
        for req_id, sink in self._sink_requests.items():
            request = self.requests[req_id]
            # Running requests, and streaming sessions resuming with a new
            # input (WAITING, blocks held) before they are scheduled again.
            if request.status == RequestStatus.RUNNING or (
                request.status == RequestStatus.WAITING
                and request.num_computed_tokens > 0
            ):
                self._evict(request, sink)
            if sink.pending and request.status in (
                RequestStatus.RUNNING,
                RequestStatus.WAITING,
                RequestStatus.PREEMPTED,
            ):
                self._reveal_prompt(request, sink)
        if self.sink_rotated:
            self._add_views()
        self._hide_beyond_chunk()
        try:
            output = super().schedule(*args, **kwargs)
        finally:
            self._restore_hidden()
        self._send_evictions(output)
        return output

    def _hide_beyond_chunk(self) -> None:
        """Caps the next chunk of each sink request at ``sink_prefill_chunk``.

        vLLM schedules ``num_tokens - num_computed_tokens`` tokens (capped by
        budgets); tokens past the cap are taken off the request for the
        duration of ``schedule()`` and put back in ``_update_after_schedule``::

            all tokens:  [ computed | cap ][ hidden tail ]
                                    ^ what vLLM may schedule now
        """
        for req_id, sink in self._sink_requests.items():
            request = self.requests.get(req_id)
            if request is None or request.is_finished():
                continue
            pending = bool(sink.pending)
            if not pending and request.num_tokens - request.num_computed_tokens < 2:
                continue  # decoding: one token, which always has room
            # Keeps the chunk's positions below max_model_len and, while a
            # prompt tail is pending, the chunk short of the visible prompt's
            # end (or the worker would sample a token there).
            spare = 2 if pending else 1
            room = self.max_model_len - spare - request.num_computed_tokens
            end = request.num_computed_tokens + max(min(sink.max_chunk, room), 0)
            if request.num_tokens > end:
                self._sink_hidden[req_id] = request._all_token_ids[end:]
                del request._all_token_ids[end:]

    def _restore_hidden(self) -> None:
        for req_id, tail in self._sink_hidden.items():
            self.requests[req_id]._all_token_ids.extend(tail)
        self._sink_hidden.clear()

    def _update_after_schedule(self, scheduler_output: SchedulerOutput) -> None:
        self._restore_hidden()
        super()._update_after_schedule(scheduler_output)

    def _evict(self, request: Request, sink: SinkRequestState) -> None:
        """Rolls the window of one request before its next chunk."""
        window = sink.window
        # With async scheduling this counts the step still in flight: its
        # keys are written before the next step runs (one CUDA stream), and
        # the reference evicts before every chunk counting all earlier ones.
        count = window.num_tokens_to_evict(request.num_computed_tokens)
        if count == 0:
            return
        start = window.num_sink_slots
        num_blocks = count // window.block_size
        self.sink_kv.evict(request.request_id, window.num_sink_blocks, num_blocks)
        if self.sink_rotated:
            # Views are allocated once every request has evicted (_add_views).
            sink.offset += count

        eviction = Eviction(start=start, count=count)
        # The output list backs the request's read-only views: edited in place.
        prompt, output, num_prompt, num_output = eviction.trim(
            request.prompt_token_ids,
            request._output_token_ids,
            request.num_prompt_tokens,
        )
        request.prompt_token_ids = prompt
        request.num_prompt_tokens -= num_prompt
        request._output_token_ids[:] = output
        del request._all_token_ids[start : start + count]
        request.max_tokens -= num_output
        # min_tokens counts the whole output: lowered as max_tokens is.
        request.sampling_params = lower_min_tokens(request.sampling_params, num_output)
        sink.evicted_outputs += num_output
        request.num_computed_tokens -= count
        sink.masked = sink.mask is not None

        assert sink.unsent is None or not sink.unsent.revealed, (
            "evictions are applied before revealed tokens"
        )
        unsent = sink.unsent.count if sink.unsent is not None else 0
        sink.unsent = Eviction(start=start, count=unsent + count)
        self.sink_stats.evicted_blocks += num_blocks
        self.sink_stats.evicted_tokens += count

    def _add_views(self) -> None:
        """Gives each request that has evicted its view blocks (rotated keys).

        Runs after every request's eviction, so the pool holds all blocks the
        step freed. A request may not go on without its views (its sinks
        would be E positions too far), nor wait for them while it decodes
        (its window, then its positions, would outgrow the cache). So, as
        vLLM's ``schedule()`` does when a block cannot be allocated, the
        lowest-priority running requests are preempted until the views fit;
        when that is the request itself, it is preempted: it resumes by
        re-prefilling the sinks + window it holds, with no views::

            pool dry:  [ r0 needs 2 views ] [ r1 ] [ r2 ]   (r2 lowest priority)
            preempt r2 -> its blocks and views return -> r0 takes 2 views
        """
        for req_id, sink in self._sink_requests.items():
            need = sink.window.num_sink_blocks - len(sink.views)
            if sink.offset == 0 or need <= 0:
                continue
            request = self.requests[req_id]
            while self.sink_kv.num_free_blocks() < need:
                victim = self._lowest_priority_running()
                if victim is None or victim is request:
                    break
                self._preempt_now(victim)
            if self.sink_kv.take_views(sink.views, need):
                continue
            if request.status == RequestStatus.RUNNING:
                self._preempt_now(request)
            else:  # a streaming session waiting for input: drop its cache
                self._drop_shift(sink)
                self.sink_kv.free(request)
                request.num_computed_tokens = 0

    def _lowest_priority_running(self) -> Request | None:
        """The request vLLM's ``schedule()`` would preempt first."""
        if not self.running:
            return None
        if self.policy == SchedulingPolicy.PRIORITY:
            return max(self.running, key=lambda r: (r.priority, r.arrival_time))
        return self.running[-1]

    def _preempt_now(self, request: Request) -> None:
        self.running.remove(request)
        self._preempt_request(request, time.monotonic())
        self.sink_stats.view_preemptions += 1

    def _send_evictions(self, output: SchedulerOutput) -> None:
        """Tells the worker about evictions of the requests it will run."""
        evictions = {}
        cached = output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            sink = self._sink_requests.get(req_id)
            if sink is None:
                continue
            if req_id in cached.all_token_ids:
                # Copied while the tail was hidden.
                cached.all_token_ids[req_id] = self.requests[
                    req_id
                ].all_token_ids.copy()
            if sink.unsent is not None:
                evictions[req_id], sink.unsent = sink.unsent, None
                # The worker replaces the row of a "resumed" request.
                cached.resumed_req_ids.add(req_id)
                cached.new_block_ids[i] = self.sink_kv.worker_row(req_id, sink.views)
        sent_whole = []
        for new in output.scheduled_new_reqs:
            sink = self._sink_requests.get(new.req_id)
            if sink is not None:
                # Sent whole (a session's next input): nothing to trim.
                sink.unsent = None
                new.block_ids = self.sink_kv.worker_row(new.req_id, sink.views)
                sent_whole.append(new.req_id)
        masks = {}
        if self.sink_config.sink_exact_tokens:  # the only source of masks
            for req_id in [*cached.req_ids, *sent_whole]:
                sink = self._sink_requests.get(req_id)
                if sink is not None and sink.masked:
                    masks[req_id] = sink.mask
        views = {}
        if self.sink_rotated:
            for req_id in [*evictions, *sent_whole]:
                sink = self._sink_requests[req_id]
                if sink.offset:
                    views[req_id] = self.sink_kv.views_message(
                        req_id, sink.offset, sink.views
                    )
        attach(output, SinkMessages(evictions=evictions, views=views, masks=masks))
        # A request's block count changes only when it gets blocks.
        grown = [
            r for r, b in zip(cached.req_ids, cached.new_block_ids, strict=True) if b
        ]
        for req_id in [*grown, *sent_whole]:
            if req_id in self._sink_requests:
                held = self._num_blocks_held(req_id)
                self.sink_stats.max_blocks_held = max(
                    self.sink_stats.max_blocks_held, held
                )

    def _num_blocks_held(self, req_id: str) -> int:
        """KV blocks a request holds, its views included."""
        return self.sink_kv.num_blocks_held(req_id, self._sink_requests[req_id].views)

    def num_view_blocks(self) -> int:
        """View blocks held by all sink requests (rotated keys)."""
        return sum(len(sink.views) for sink in self._sink_requests.values())

    def make_stats(self, *args, **kwargs):
        stats = super().make_stats(*args, **kwargs)
        if stats is not None:
            blocks = [
                self._num_blocks_held(req_id)
                for req_id in self._sink_requests
                if self.requests[req_id].status == RequestStatus.RUNNING
            ]
            # Read by vllm_sink_plugin.metrics in the frontend.
            stats.sink_stats = dict(
                running=len(blocks),
                cache_blocks=blocks,
                evicted_blocks=self.sink_stats.evicted_blocks,
                evicted_tokens=self.sink_stats.evicted_tokens,
                preemptions=self.sink_stats.num_preemptions,
            )
        return stats

    # -- stopping and cleanup ----------------------------------------------

    def _update_request_with_output(self, request, new_token_ids, *args, **kwargs):
        if request.request_id not in self._sink_requests:
            return super()._update_request_with_output(
                request, new_token_ids, *args, **kwargs
            )
        # A sink request never stops for max_model_len (its cache never
        # reaches it); EOS, stop strings and max_tokens still apply.
        saved, self.max_model_len = self.max_model_len, _UNBOUNDED
        try:
            return super()._update_request_with_output(
                request, new_token_ids, *args, **kwargs
            )
        finally:
            self.max_model_len = saved

    def _preempt_request(self, request: Request, *args, **kwargs):
        # Resuming re-prefills what the request holds: its cache tokens
        # (sinks + window) and the pending token, not its whole history.
        req_id = request.request_id
        sink = self._sink_requests.get(req_id)
        if sink is not None:
            generated = request.num_output_tokens + sink.evicted_outputs
            self.sink_stats.preemptions.setdefault(req_id, []).append(generated)
            self.sink_stats.num_preemptions += 1
            # Re-prefilled from scratch: offset 0, no views.
            self._drop_shift(sink)
        return super()._preempt_request(request, *args, **kwargs)

    def _drop_shift(self, sink: SinkRequestState) -> None:
        sink.offset = 0
        self.sink_kv.free_views(sink.views)

    def _free_request(self, request: Request, *args, **kwargs):
        sink = self._sink_requests.pop(request.request_id, None)
        if sink is not None:
            self._drop_shift(sink)
        return super()._free_request(request, *args, **kwargs)


class StreamingSinkAsyncScheduler(StreamingSinkScheduler, AsyncScheduler):
    """The sink policy over vLLM's ``AsyncScheduler`` (Model Runner V2)."""


def _request_error(message: str):
    """vLLM 0.33's per-request error (``vllm.outputs.RequestError``)."""
    from vllm.outputs import RequestError

    return RequestError(code="validation_error", message=message)
