# SPDX-License-Identifier: Apache-2.0
"""The engine's settings and the step loop every workload runs.

The child sets its environment *before* importing vLLM: ``VLLM_PLUGINS=""``
makes stock vLLM load no plugin (``vllm.envs`` splits the value on commas and
``vllm.plugins`` loads only entry points named in the list, so an empty string
allows none), and ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` keeps the engine core
and its scheduler in this process. Workloads then drive
``llm.llm_engine.step()`` themselves and record, after every step, the time and
the tokens generated so far (requests use delta outputs, so a step costs the
same at token 10 as at token 1,000,000).

The child's entry point, which starts the engine and runs the workloads, is
:func:`benchmarks.gpu.child.child_main`.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import os
import random
import sys
import time
from array import array
from collections.abc import Callable

from benchmarks.gpu.plan import CPU_BLOCK_SIZE, GPU_BLOCK_SIZE, EngineSpec, Sizes

try:
    from tqdm import tqdm
except ImportError:  # the GPU bundle may lack it: no bars, same results

    class tqdm:  # stands in for tqdm.tqdm
        def __init__(self, *args, **kwargs):
            pass

        def update(self, n=1):
            pass

        def close(self):
            pass


def random_tokens(n: int, seed: int, vocab: int) -> list[int]:
    """``n`` token ids in ``[3, vocab)``: no BOS/EOS, reproducible."""
    rng = random.Random(seed)
    return [rng.randrange(3, vocab) for _ in range(n)]


def _nvml_handle():
    """``(pynvml, handle)`` of this process's GPU (the first visible one)."""
    try:
        import pynvml
    except ImportError:
        from vllm.third_party import pynvml
    import torch

    pynvml.nvmlInit()
    uuid = str(torch.cuda.get_device_properties(0).uuid)
    uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
    except (TypeError, AttributeError):  # bindings that want bytes
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid.encode())
    total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
    if abs(total - torch.cuda.mem_get_info()[1]) > total // 10:
        raise RuntimeError("NVML and CUDA disagree on the device")
    return pynvml, handle


class MemoryProbe:
    """Device memory in use: NVML, else ``cudaMemGetInfo``; process RSS on CPU."""

    def __init__(self, device: str):
        self.device = device
        self.source = "process RSS"
        self._nvml = None
        if device != "cuda":
            return
        self.source = "cudaMemGetInfo"
        try:
            self._nvml = _nvml_handle()
            self.source = "NVML"
        except Exception:  # any NVML trouble: cudaMemGetInfo instead
            self._nvml = None

    def sample(self) -> dict:
        """``used_mib`` (device-wide, or RSS on CPU) and ``torch_allocated_mib``."""
        mib = 1 << 20
        if self.device != "cuda":
            import psutil

            return {
                "used_mib": psutil.Process().memory_info().rss / mib,
                "torch_allocated_mib": None,
            }
        import torch

        if self._nvml is not None:
            pynvml, handle = self._nvml
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used
        else:
            free, total = torch.cuda.mem_get_info()
            used = total - free
        return {
            "used_mib": used / mib,
            "torch_allocated_mib": torch.cuda.memory_allocated() / mib,
        }


@dataclasses.dataclass
class Stream:
    """One request as the step loop sees it."""

    rid: str
    prompt_len: int
    max_tokens: int
    generated: int = 0
    finish_reason: str | None = None
    tail: collections.deque | None = None  # last tokens, when asked for

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def length(self) -> int:
        return self.prompt_len + self.generated


class StepLog:
    """Time and cumulative generated tokens after every engine step.

    Index 0 is the start (time 0, no tokens), so ``rate(0, i)`` covers
    everything up to step ``i``.
    """

    def __init__(self):
        self.t0 = time.perf_counter()
        self.t = array("d", [0.0])
        self.tokens = array("q", [0])
        self.memory: list[dict] = []
        self.marks: dict[str, int] = {}
        self.max_running = 0
        self.next_sample = 0.0  # time of the next memory sample

    @property
    def last(self) -> int:
        return len(self.t) - 1

    def rate(self, i: int, j: int) -> float | None:
        """Tokens per second between the ends of steps ``i`` and ``j``."""
        if j <= i or self.t[j] <= self.t[i]:
            return None
        return (self.tokens[j] - self.tokens[i]) / (self.t[j] - self.t[i])

    def index_at(self, tokens: float) -> int:
        """The first step at whose end ``tokens`` had been generated."""
        return min(bisect.bisect_left(self.tokens, tokens), self.last)

    def curve(self, per: int = 1, points: int = 240) -> list[list[float]]:
        """``[tokens / per, tok/s]`` over ``points`` equal runs of steps."""
        n = self.last
        edges = sorted({round(k * n / points) for k in range(points + 1)})
        out = []
        for i, j in zip(edges, edges[1:], strict=False):
            rate = self.rate(i, j)
            if rate is not None:
                out.append([round(self.tokens[j] / per, 1), round(rate, 2)])
        return out


class Runner:
    """Drives one in-process engine: add requests, step, record.

    Attributes:
        scheduler: the engine core's scheduler (the plugin's subclass on
            sink engines: ``sink_stats`` lives there).
        idle_free: free KV blocks with no request running (after warm-up).
    """

    def __init__(self, llm, *, device: str, vocab: int, memory_interval: float):
        self.llm = llm
        self.engine = llm.llm_engine
        self.scheduler = self.engine.engine_core.engine_core.scheduler
        self.device = device
        self.vocab = vocab
        self.memory_interval = memory_interval
        self.probe = MemoryProbe(device)
        self.streams: dict[str, Stream] = {}
        self.idle_free = self.free_blocks()
        self._next_id = 0

    @property
    def block_size(self) -> int:
        return self.engine.vllm_config.cache_config.block_size

    @property
    def max_num_batched_tokens(self) -> int:
        return self.engine.vllm_config.scheduler_config.max_num_batched_tokens

    def free_blocks(self) -> int:
        return self.scheduler.kv_cache_manager.block_pool.get_num_free_blocks()

    def blocks_in_use(self) -> int:
        return self.idle_free - self.free_blocks()

    def reset(self) -> None:
        """Forgets finished streams; aborts any left running."""
        self.abort_unfinished()
        self.streams.clear()

    def add(
        self,
        prompt: list[int],
        max_tokens: int,
        *,
        keep: int = 0,
        prefix: str = "r",
    ) -> Stream:
        """Adds one greedy ``ignore_eos`` request; ``keep`` tokens are kept."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=0.0,
            ignore_eos=True,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )
        rid = f"{prefix}{self._next_id}"
        self._next_id += 1
        self.engine.add_request(rid, {"prompt_token_ids": prompt}, params)
        tail = collections.deque(prompt[-keep:], maxlen=keep) if keep else None
        stream = Stream(rid, len(prompt), max_tokens, tail=tail)
        self.streams[rid] = stream
        return stream

    def running(self) -> list[Stream]:
        return [s for s in self.streams.values() if not s.done]

    def run(
        self,
        log: StepLog,
        bar,
        *,
        stop: Callable[[], bool] | None = None,
        on_finish: Callable[[Stream], None] | None = None,
        marks: dict[str, Callable[[], bool]] | None = None,
    ) -> StepLog:
        """Steps the engine until no request is left or ``stop()`` is true.

        Args:
            log: where each step is recorded (several runs may share one).
            bar: a tqdm bar, advanced by the tokens of each step.
            stop: checked after each step.
            on_finish: called with each finished stream (it may add more).
            marks: name -> condition; ``log.marks[name]`` becomes the first
                step after which the condition held. ``"first_finish"`` is
                marked by the loop itself.
        """
        pending = {k: v for k, v in (marks or {}).items() if k not in log.marks}
        total = log.tokens[-1]
        while self.engine.has_unfinished_requests():
            outputs = self.engine.step()
            now = time.perf_counter() - log.t0
            finished = []
            step_tokens = 0
            for out in outputs:
                stream = self.streams.get(out.request_id)
                if stream is None:
                    continue
                completion = out.outputs[0]
                step_tokens += len(completion.token_ids)
                stream.generated += len(completion.token_ids)
                if stream.tail is not None:
                    stream.tail.extend(completion.token_ids)
                if out.finished:
                    stream.finish_reason = str(completion.finish_reason)
                    finished.append(stream)
            total += step_tokens
            log.t.append(now)
            log.tokens.append(total)
            log.max_running = max(log.max_running, len(self.scheduler.running))
            if step_tokens:
                bar.update(step_tokens)
            if finished and "first_finish" not in log.marks:
                log.marks["first_finish"] = log.last
            for name, condition in list(pending.items()):
                if condition():
                    log.marks[name] = log.last
                    del pending[name]
            if now >= log.next_sample:
                log.next_sample = now + self.memory_interval
                log.memory.append(
                    {
                        "t": round(now, 3),
                        "tokens": total,
                        "kv_blocks": self.blocks_in_use(),
                        "running": len(self.scheduler.running),
                        **self.probe.sample(),
                    }
                )
            if on_finish is not None:
                for stream in finished:
                    on_finish(stream)
            if stop is not None and stop():
                break
        return log

    def abort_unfinished(self) -> None:
        """Aborts the streams still running and lets the engine settle."""
        running = self.running()
        if running:
            self.engine.abort_request([s.rid for s in running])
            for stream in running:
                stream.finish_reason = "abort"
        for _ in range(4):  # async scheduling may hold one batch in flight
            if not self.engine.has_unfinished_requests():
                break
            self.engine.step()

    def warm_up(self, max_model_len: int, fill_tokens: int) -> None:
        """A few requests through the engine (and, with the plugin, evictions)."""
        long = min(max(max_model_len // 2, fill_tokens) + 64, max_model_len - 64)
        prompts = [random_tokens(long, 0, self.vocab)]
        prompts += [random_tokens(64, seed, self.vocab) for seed in (1, 2, 3)]
        for prompt in prompts:
            self.add(prompt, 2 * self.block_size + 8, prefix="warm")
        self.run(StepLog(), tqdm(disable=True))
        self.reset()
        self.idle_free = self.free_blocks()


def engine_kwargs(
    spec: EngineSpec,
    sizes: Sizes,
    *,
    device: str,
    gpu_memory_utilization: float,
    parallel: dict | None = None,
) -> dict:
    """``LLM(...)`` arguments; both sides of a comparison differ only in policy.

    ``parallel`` (``tensor_parallel_size``, ``distributed_executor_backend``)
    applies to every engine of a run alike.
    """
    kwargs = dict(
        **(parallel or {}),
        load_format="dummy",
        skip_tokenizer_init=True,
        seed=0,
        max_model_len=spec.max_model_len,
        max_num_seqs=sizes.max_num_seqs,
    )
    if device == "cpu":
        kwargs.update(
            dtype="float32",
            block_size=CPU_BLOCK_SIZE,
            enforce_eager=True,
            kv_cache_memory_bytes=(sizes.kv_cache_mib or 1024) << 20,
        )
    else:
        kwargs.update(dtype="bfloat16", block_size=GPU_BLOCK_SIZE)
        if sizes.kv_cache_mib:
            kwargs["kv_cache_memory_bytes"] = sizes.kv_cache_mib << 20
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    if spec.prefix_caching is not None:
        kwargs["enable_prefix_caching"] = spec.prefix_caching
    if spec.sink:
        kwargs["additional_config"] = {
            "kv_policy": "sink",
            "num_sink_tokens": sizes.num_sink_tokens,
            "sink_window": sizes.sink_window,
        }
    scheduling = os.environ.get("SINK_BENCH_SCHEDULING")  # "sync" / "async"
    if scheduling and spec.sink:  # the plugin side only; stock keeps defaults
        kwargs["async_scheduling"] = scheduling == "async"
    return kwargs


def device_name(device: str) -> str:
    if device != "cuda":
        return "cpu"
    import torch

    return torch.cuda.get_device_name(0)


def engine_info(llm, spec: EngineSpec, start_s: float, runner: Runner) -> dict:
    """What the engine actually runs with, and checks that the policy is right.

    Raises:
        RuntimeError: the plugin engine runs without the plugin's scheduler, or
            the baseline engine has the plugin loaded.
    """
    import torch
    import vllm

    config = llm.llm_engine.vllm_config
    scheduler_cls = type(runner.scheduler)
    info = {
        "model": spec.model,
        "sink": spec.sink,
        "additional_config": config.additional_config or {},
        "max_model_len": config.model_config.max_model_len,
        "block_size": config.cache_config.block_size,
        "num_kv_blocks": config.cache_config.num_gpu_blocks,
        "idle_free_blocks": runner.idle_free,
        "async_scheduling": config.scheduler_config.async_scheduling,
        "max_num_batched_tokens": config.scheduler_config.max_num_batched_tokens,
        "max_num_seqs": config.scheduler_config.max_num_seqs,
        "tensor_parallel_size": config.parallel_config.tensor_parallel_size,
        "distributed_executor_backend": str(
            config.parallel_config.distributed_executor_backend
        ),
        "enable_prefix_caching": config.cache_config.enable_prefix_caching,
        "enforce_eager": config.model_config.enforce_eager,
        "dtype": str(config.model_config.dtype),
        "use_v2_model_runner": getattr(config, "use_v2_model_runner", None),
        "scheduler_cls": f"{scheduler_cls.__module__}.{scheduler_cls.__qualname__}",
        "plugin_loaded": "vllm_sink_plugin" in sys.modules,
        "VLLM_PLUGINS": os.environ.get("VLLM_PLUGINS"),
        "start_seconds": round(start_s, 1),
        "device_name": device_name(runner.device),
        "memory_source": runner.probe.source,
        "vllm": vllm.__version__,
        "torch": torch.__version__,
    }
    if spec.sink and not scheduler_cls.__name__.startswith("StreamingSink"):
        raise RuntimeError(f"plugin engine runs {info['scheduler_cls']}")
    if not spec.sink and info["plugin_loaded"]:
        raise RuntimeError("baseline engine has vllm_sink_plugin loaded")
    return info
