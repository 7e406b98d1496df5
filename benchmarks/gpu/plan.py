# SPDX-License-Identifier: Apache-2.0
"""What runs where: sizes per scale, the engines and the tasks each one runs.

Every engine configuration runs in its own child process, so an engine start
(about 60-90 s on an H100: weights, ``torch.compile``, CUDA graphs) is paid
once per configuration. Tasks that need the same configuration share it::

    plugin-1b    llama-1b, --kv-policy sink   P1, P2 streams, P5, long stream, soak
    baseline-1b  llama-1b, stock vLLM         P1, P2 (4k context), P4 half-window
    dense-1b     llama-1b, stock, long ctx    P3
    plugin-7b    llama2-7b, --kv-policy sink  P4 per token
    baseline-7b  llama2-7b, stock, no prefix  P4 sliding window + re-computation

At ``--scale smoke`` every role uses the tiny model with one length, so the
five roles collapse into two engines (one with the plugin, one without).
"""

from __future__ import annotations

import dataclasses

WORKLOADS = ("p1", "p2", "p3", "p4", "p5", "soak")
SCALES = ("smoke", "small", "full")
GPU_BLOCK_SIZE = 16
CPU_BLOCK_SIZE = 32


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sizes:
    """The sizes of every workload at one scale (tokens unless named).

    Attributes:
        model, model_7b: model of the llama-1b roles and of P4.
        num_sink_tokens, sink_window: the plugin's S and W (all plugin engines).
        max_model_len: plugin and 4k-baseline engines.
        dense_max_model_len: the P3 dense engine (long prompts).
        max_num_seqs: every engine.
        baseline_prefix_caching: prefix caching of the stock 1b engines (None:
            vLLM's default, on). The re-computation engine always turns it off.
        p1_requests, p1_prompt, p1_output: P1 (caches never fill).
        p2_streams, p2_prompt, p2_tokens: P2 plugin streams (tokens each).
        p2_base_prompt, p2_base_output: P2 baseline at a ~4k context.
        long_tokens: the single stream of the flatness run.
        p3_context, p3_output, p3_max_streams: P3 dense prompts and decode.
        p4_batches: batch sizes of P4 per token (the first is the key's).
        p4_recompute_steps: re-computation steps per batch size.
        p4_plugin_tokens: plugin tokens decoded past the fill per batch size.
        p5_warm_steps, p5_steps: decode steps before and inside the profile.
        soak_seconds, soak_stream_tokens: the soak (streams are renewed).
        memory_interval: seconds between memory samples.
        kv_cache_mib: a fixed KV pool (None: ``--gpu-memory-utilization`` on
            GPUs, 1 GiB on CPU). Tiny models get one so that the pool does not
            hold millions of blocks.
    """

    model: str
    model_7b: str
    num_sink_tokens: int = 4
    sink_window: int
    max_model_len: int
    dense_max_model_len: int
    max_num_seqs: int
    baseline_prefix_caching: bool | None = None
    p1_requests: int
    p1_prompt: int
    p1_output: int
    p2_streams: int
    p2_prompt: int
    p2_tokens: int
    p2_base_prompt: int
    p2_base_output: int
    long_tokens: int
    p3_context: int
    p3_output: int
    p3_max_streams: int
    p4_batches: tuple[int, ...]
    p4_recompute_steps: tuple[int, ...]
    p4_plugin_tokens: int
    p5_warm_steps: int
    p5_steps: int
    soak_seconds: float
    soak_stream_tokens: int
    memory_interval: float = 1.0
    kv_cache_mib: int | None = None

    @property
    def cache_tokens(self) -> int:
        """Nominal cache of a sink request, S + W (the paper's cache size)."""
        return self.num_sink_tokens + self.sink_window

    def fill_tokens(self, block_size: int) -> int:
        """Slots of a full sink cache: S and W rounded up to whole blocks."""
        sinks = -(-self.num_sink_tokens // block_size)
        window = -(-self.sink_window // block_size)
        return (sinks + window) * block_size


_FULL = Sizes(
    model="llama-1b",
    model_7b="llama2-7b",
    sink_window=4092,
    max_model_len=8192,
    dense_max_model_len=65536 + 2048,
    max_num_seqs=256,
    p1_requests=256,
    p1_prompt=512,
    p1_output=512,
    p2_streams=64,
    p2_prompt=512,
    p2_tokens=65536,
    p2_base_prompt=3584,
    p2_base_output=512,
    long_tokens=1_000_000,
    p3_context=65536,
    p3_output=256,
    p3_max_streams=64,
    p4_batches=(1, 16),
    p4_recompute_steps=(32, 32),
    p4_plugin_tokens=1024,
    p5_warm_steps=8,
    p5_steps=32,
    soak_seconds=600,
    soak_stream_tokens=16384,
)

SIZES: dict[str, Sizes] = {
    "full": _FULL,
    # About 20 minutes of H100 time with the five engine starts.
    "small": dataclasses.replace(
        _FULL,
        p2_tokens=8192,
        long_tokens=16384,
        p4_recompute_steps=(32, 8),
        p4_plugin_tokens=256,
        soak_seconds=90,
        soak_stream_tokens=8192,
    ),
    # Seconds per workload: checks the harness, not the plugin (CPU CI).
    "smoke": Sizes(
        model="tiny-llama",
        model_7b="tiny-llama",
        sink_window=96,
        max_model_len=512,
        dense_max_model_len=512,
        max_num_seqs=16,
        baseline_prefix_caching=False,
        p1_requests=8,
        p1_prompt=32,
        p1_output=32,
        p2_streams=8,
        p2_prompt=32,
        p2_tokens=256,
        p2_base_prompt=96,
        p2_base_output=32,
        long_tokens=640,
        p3_context=384,
        p3_output=16,
        p3_max_streams=4,
        p4_batches=(1, 4),
        p4_recompute_steps=(8, 4),
        p4_plugin_tokens=32,
        p5_warm_steps=4,
        p5_steps=8,
        soak_seconds=3,
        soak_stream_tokens=64,
        memory_interval=0.05,
        kv_cache_mib=96,
    ),
}


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """One engine configuration (one child process)."""

    model: str
    max_model_len: int
    sink: bool
    prefix_caching: bool | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    """One measurement; ``needed_by`` are the --only names that need it."""

    name: str
    role: str
    needed_by: frozenset[str]
    title: str


TASKS = (
    Task("p1_plugin", "plugin-1b", frozenset({"p1"}), "P1 plugin, caches never fill"),
    Task(
        "p2_plugin",
        "plugin-1b",
        frozenset({"p2", "p3", "p4"}),
        "P2 plugin streams past the fill",
    ),
    Task("p5_profile", "plugin-1b", frozenset({"p5"}), "P5 profile of decode steps"),
    Task("p2_long", "plugin-1b", frozenset({"p2"}), "P2 flatness, one long stream"),
    Task("soak", "plugin-1b", frozenset({"soak"}), "soak: long stream + streams"),
    Task("p1_baseline", "baseline-1b", frozenset({"p1"}), "P1 stock vLLM"),
    Task("p2_baseline", "baseline-1b", frozenset({"p2"}), "P2 stock vLLM, 4k context"),
    Task("p4_restart", "baseline-1b", frozenset({"p4"}), "P4 half-window restarts"),
    Task("p3_dense", "dense-1b", frozenset({"p3"}), "P3 stock vLLM, dense long ctx"),
    Task("p4_plugin", "plugin-7b", frozenset({"p4"}), "P4 plugin per token (7B)"),
    Task("p4_recompute", "baseline-7b", frozenset({"p4"}), "P4 re-computation (7B)"),
)


def engine_specs(sizes: Sizes) -> dict[str, EngineSpec]:
    """The engine configuration of every role."""
    return {
        "plugin-1b": EngineSpec(sizes.model, sizes.max_model_len, sink=True),
        "baseline-1b": EngineSpec(
            sizes.model,
            sizes.max_model_len,
            sink=False,
            prefix_caching=sizes.baseline_prefix_caching,
        ),
        "dense-1b": EngineSpec(
            sizes.model,
            sizes.dense_max_model_len,
            sink=False,
            prefix_caching=sizes.baseline_prefix_caching,
        ),
        "plugin-7b": EngineSpec(sizes.model_7b, sizes.max_model_len, sink=True),
        "baseline-7b": EngineSpec(
            sizes.model_7b, sizes.max_model_len, sink=False, prefix_caching=False
        ),
    }


@dataclasses.dataclass
class EngineJob:
    """The tasks one child process runs on one engine configuration."""

    name: str
    spec: EngineSpec
    tasks: list[Task]


def build_plan(
    sizes: Sizes, only: set[str], done: set[str] = frozenset()
) -> list[EngineJob]:
    """Groups the tasks that ``only`` needs by engine configuration, in order.

    Args:
        sizes: the scale's sizes.
        only: workload names (``WORKLOADS``) to measure.
        done: task names whose results are kept from an earlier run.
    """
    specs = engine_specs(sizes)
    jobs: dict[EngineSpec, EngineJob] = {}
    for task in TASKS:
        if not task.needed_by & only or task.name in done:
            continue
        spec = specs[task.role]
        if spec not in jobs:
            jobs[spec] = EngineJob(task.role, spec, [])
        job = jobs[spec]
        if task.role not in job.name.split("+"):
            job.name += "+" + task.role
        job.tasks.append(task)
    return list(jobs.values())


# Rough H100 rates behind the plan's estimates (llama-1b unless 7b).
_START_S = {"llama-1b": 75.0, "llama2-7b": 90.0, "tiny-llama": 40.0}
_DECODE_64 = 9000.0  # tok/s, 64 streams at a ~4k context
_DECODE_1 = 350.0  # tok/s, one stream
_PREFILL = 80000.0  # tok/s
_PREFILL_7B = 20000.0
_DECODE_7B_1 = 150.0


def estimate_seconds(task: Task, sizes: Sizes) -> float:
    """A rough H100 estimate of one task's wall time (engine start excluded)."""
    s = sizes
    streams_tokens = s.p2_streams * s.p2_tokens
    batch_steps = list(zip(s.p4_batches, s.p4_recompute_steps, strict=True))
    estimates = {
        "p1_plugin": s.p1_requests * (s.p1_prompt / _PREFILL + s.p1_output / 16000),
        "p1_baseline": s.p1_requests * (s.p1_prompt / _PREFILL + s.p1_output / 18000),
        "p2_plugin": s.p2_streams * s.p2_prompt / _PREFILL
        + streams_tokens / _DECODE_64,
        "p5_profile": s.p2_streams * s.fill_tokens(GPU_BLOCK_SIZE) / _PREFILL + 15,
        "p2_long": s.long_tokens / _DECODE_1,
        "soak": s.soak_seconds + 10,
        "p2_baseline": s.p2_streams
        * (s.p2_base_prompt / _PREFILL + s.p2_base_output / _DECODE_64),
        "p4_restart": streams_tokens * (1 / _DECODE_64 + 1 / _PREFILL),
        "p3_dense": min(s.p3_max_streams, 30) * s.p3_context / (_PREFILL / 2)
        + 0.03 * s.p3_output,
        "p4_plugin": sum(
            b * s.cache_tokens / _PREFILL_7B
            + (s.p4_plugin_tokens + 64) / (_DECODE_7B_1 * (0.6 * b if b > 1 else 1))
            for b in s.p4_batches
        ),
        "p4_recompute": sum(
            (n + 1) * b * s.cache_tokens / _PREFILL_7B for b, n in batch_steps
        ),
    }
    return estimates[task.name] + 5  # warm-up and bookkeeping


def engine_start_seconds(spec: EngineSpec) -> float:
    return _START_S.get(spec.model, 75.0)


def describe(task: Task, sizes: Sizes) -> str:
    """The sizes of one task, for the printed plan."""
    s = sizes
    cache = f"cache {s.num_sink_tokens}+{s.sink_window}"
    batches = "/".join(map(str, s.p4_batches))
    steps = "/".join(map(str, s.p4_recompute_steps))
    return {
        "p1_plugin": f"{s.p1_requests} requests x {s.p1_prompt}+{s.p1_output} tokens",
        "p1_baseline": f"{s.p1_requests} requests x {s.p1_prompt}+{s.p1_output} tokens",
        "p2_plugin": f"{s.p2_streams} streams x {s.p2_tokens:,} tokens, {cache}",
        "p5_profile": f"{s.p5_steps} profiled decode steps x {s.p2_streams} streams",
        "p2_long": f"1 stream x {s.long_tokens:,} tokens",
        "soak": f"{s.soak_seconds:g} s: long stream + {s.p2_streams} streams",
        "p2_baseline": f"{s.p2_streams} streams, {s.p2_base_prompt} prompt + "
        f"{s.p2_base_output} decoded",
        "p4_restart": f"{s.p2_streams} streams x {s.p2_tokens:,} tokens, restart at "
        f"{s.cache_tokens} from {s.cache_tokens // 2}",
        "p3_dense": f"<= {s.p3_max_streams} streams, {s.p3_context:,} context + "
        f"{s.p3_output} decoded",
        "p4_plugin": f"batch {batches}, prompt {s.cache_tokens}, "
        f"{s.p4_plugin_tokens} tokens past the fill",
        "p4_recompute": f"batch {batches}, W {s.cache_tokens}, {steps} tokens",
    }[task.name]


# Ratios measured again on every repetition: key -> (plugin task, baseline
# task, plugin rate field, baseline rate field).
REPEATED = {
    "p1_no_eviction_ratio": ("p1_plugin", "p1_baseline", "tok_s", "tok_s"),
    "p2_streaming_ratio": ("p2_plugin", "p2_baseline", "tok_s", "decode_tok_s"),
}
REPEATED_TASKS = frozenset(name for pair in REPEATED.values() for name in pair[:2])


def repeat_plan(jobs: list[EngineJob], reps: int) -> list[tuple[int, EngineJob]]:
    """``jobs`` once, then their ratio tasks ``reps - 1`` more times.

    The repeated engines alternate, so neither side always runs first on a
    warming or drifting machine::

        rep 1: plugin (all tasks), baseline (all tasks), other engines
        rep 2: baseline (P1, P2), plugin (P1, P2)
        rep 3: plugin (P1, P2), baseline (P1, P2)

    Returns:
        ``(repetition, job)`` pairs in run order; later repetitions' jobs are
        named ``<job>-rep<k>``.
    """
    planned = [(1, job) for job in jobs]
    again = [
        EngineJob(
            job.name, job.spec, [t for t in job.tasks if t.name in REPEATED_TASKS]
        )
        for job in jobs
    ]
    again = [job for job in again if job.tasks]
    for rep in range(2, reps + 1):
        order = again[::-1] if rep % 2 == 0 else again
        planned += [
            (rep, EngineJob(f"{job.name}-rep{rep}", job.spec, job.tasks))
            for job in order
        ]
    return planned
