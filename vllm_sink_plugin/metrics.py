# SPDX-License-Identifier: Apache-2.0
"""The policy's Prometheus metrics, under vLLM's ``vllm:`` prefix.

Engine core -> frontend::

    StreamingSinkScheduler.make_stats()
      -> SchedulerStats.sink_stats = {running, cache_blocks, evicted_blocks,
                                      evicted_tokens, preemptions}  (totals)
      -> EngineCoreOutputs (msgspec) -> AsyncLLM output handler
      -> SinkPrometheusStatLogger.record()  -> /metrics

``SinkPrometheusStatLogger`` is vLLM's ``PrometheusStatLogger`` plus the
metrics below; it is installed through the official ``vllm.stat_logger_plugins``
entry point (a subclass, so it replaces the stock logger instead of sitting
beside it: the stock one unregisters every ``vllm:`` collector it did not
make). On an engine without the policy it is the stock logger, unchanged.

=====================================  ======  ================================
metric                                 type    meaning
=====================================  ======  ================================
vllm:sink_requests_running             gauge   sink requests running now
vllm:sink_evicted_blocks_total         counter KV blocks evicted by the policy
vllm:sink_evicted_tokens_total         counter tokens evicted by the policy
vllm:sink_preemptions_total            counter preemptions of sink requests
vllm:sink_request_cache_blocks_max     gauge   most blocks one sink request holds
vllm:sink_request_cache_blocks         hist.   blocks held per running sink
                                               request, observed every step
=====================================  ======  ================================
"""

from __future__ import annotations

from vllm.v1.metrics.loggers import (
    PrometheusStatLogger,
    StatLoggerBase,
    create_metric_per_engine,
)

from vllm_sink_plugin.config import StreamingSinkConfig

_COUNTERS = {
    "evicted_blocks": "KV cache blocks evicted by the sink policy.",
    "evicted_tokens": "Tokens evicted from KV caches by the sink policy.",
    "preemptions": "Preemptions of sink requests.",
}
_BLOCK_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class SinkPrometheusStatLogger(PrometheusStatLogger):
    """vLLM's Prometheus logger plus the sink policy's metrics."""

    def __init__(self, vllm_config, engine_indexes: list[int] | None = None):
        super().__init__(vllm_config, engine_indexes)
        config = StreamingSinkConfig.from_mapping(vllm_config.additional_config)
        self.sink_enabled = config.enabled
        if not self.sink_enabled:
            return
        self.gauge_sink_running = self._per_engine(
            self._gauge_cls,
            "vllm:sink_requests_running",
            "Sink-policy requests running now.",
            multiprocess_mode="mostrecent",
        )
        self.gauge_sink_blocks_max = self._per_engine(
            self._gauge_cls,
            "vllm:sink_request_cache_blocks_max",
            "Most KV blocks held by one running sink request.",
            multiprocess_mode="mostrecent",
        )
        self.histogram_sink_blocks = self._per_engine(
            self._histogram_cls,
            "vllm:sink_request_cache_blocks",
            "KV blocks held per running sink request, per step.",
            buckets=_BLOCK_BUCKETS,
        )
        self.counters_sink = {
            key: self._per_engine(self._counter_cls, f"vllm:sink_{key}", doc)
            for key, doc in _COUNTERS.items()
        }
        self._sink_totals: dict[tuple[int, str], int] = {}

    def _per_engine(self, cls, name: str, documentation: str, **kwargs):
        metric = cls(
            name=name,
            documentation=documentation,
            labelnames=["model_name", "engine"],
            **kwargs,
        )
        return create_metric_per_engine(metric, self.per_engine_labelvalues)

    def record(self, scheduler_stats, iteration_stats, *args, **kwargs):
        super().record(scheduler_stats, iteration_stats, *args, **kwargs)
        sink = getattr(scheduler_stats, "sink_stats", None)
        if not self.sink_enabled or not sink:
            return
        engine = kwargs.get("engine_idx", args[1] if len(args) > 1 else 0)
        blocks = sink.get("cache_blocks") or []
        self.gauge_sink_running[engine].set(sink.get("running", 0))
        self.gauge_sink_blocks_max[engine].set(max(blocks, default=0))
        for held in blocks:
            self.histogram_sink_blocks[engine].observe(held)
        for key, counters in self.counters_sink.items():
            total = int(sink.get(key, 0))
            last = self._sink_totals.get((engine, key), 0)
            # Totals since engine start; a restarted engine starts over.
            counters[engine].inc(total - last if total >= last else total)
            self._sink_totals[(engine, key)] = total


class SinkStatsRecorder(StatLoggerBase):
    """Keeps every ``sink_stats`` the frontend receives, for Python callers.

    ``AsyncLLM.from_engine_args(args, stat_loggers=[SinkStatsRecorder])``;
    then ``SinkStatsRecorder.seen`` lists the scheduler's statistics of each
    step (the same numbers ``/metrics`` exports).
    """

    seen: list[dict] = []

    def __init__(self, vllm_config, engine_index: int = 0):
        pass

    def record(self, scheduler_stats, iteration_stats, *args, **kwargs):
        sink = getattr(scheduler_stats, "sink_stats", None)
        if sink is not None:
            SinkStatsRecorder.seen.append(dict(sink))

    def log_engine_initialized(self):
        pass

    @classmethod
    def max_blocks_since(cls, index: int = 0) -> int:
        """Most blocks one sink request held in the steps from ``index`` on."""
        return max((max(s["cache_blocks"] or [0]) for s in cls.seen[index:]), default=0)
