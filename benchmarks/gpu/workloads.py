# SPDX-License-Identifier: Apache-2.0
"""The measurements, each run on a warm engine inside its child process.

Every function takes the engine's :class:`~benchmarks.gpu.engine.Runner` and
the scale's :class:`~benchmarks.gpu.plan.Sizes` and returns a JSON-able dict
that echoes the sizes it used. Rates are generated tokens per second of wall
time, all requests greedy with ``ignore_eos``.

"Past the fill" means a sink stream holds more tokens than its cache (sink
and window slots) plus two blocks: from there on every step evicts or may
evict, and the cost of a step no longer depends on the stream's length.
"""

from __future__ import annotations

import collections
import sys
import time
import traceback

from benchmarks.gpu.engine import Runner, StepLog, Stream, random_tokens, tqdm
from benchmarks.gpu.plan import Sizes

MAX_MEMORY_SAMPLES = 400


def _bar(desc: str, total: int | None):
    """A progress bar; redrawn rarely when stderr is a log, not a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit="tok",
        unit_scale=True,
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )


def _thin(samples: list, most: int = MAX_MEMORY_SAMPLES) -> list:
    """At most ``most`` evenly spaced samples (the last one kept)."""
    if len(samples) <= most:
        return samples
    step = len(samples) / most
    return [samples[int(k * step)] for k in range(most - 1)] + [samples[-1]]


def _prompts(n: int, length: int, seed: int, vocab: int) -> list[list[int]]:
    return [random_tokens(length, seed + k, vocab) for k in range(n)]


def _finishes(streams) -> dict[str, int]:
    return dict(collections.Counter(s.finish_reason for s in streams))


def _past_fill(runner: Runner, sizes: Sizes) -> int:
    """Stream length (prompt + generated) from which its cache has rolled."""
    return sizes.fill_tokens(runner.block_size) + 2 * runner.block_size


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def throughput(runner: Runner, sizes: Sizes) -> dict:
    """P1: output tok/s of many short requests (the sink caches never fill)."""
    n, prompt_len, output = sizes.p1_requests, sizes.p1_prompt, sizes.p1_output
    prompts = _prompts(n, prompt_len, 1000, runner.vocab)
    stats = getattr(runner.scheduler, "sink_stats", None)  # plugin engines only
    evicted = stats.evicted_blocks if stats else None
    log = StepLog()
    streams = [runner.add(p, output) for p in prompts]
    bar = _bar("P1", n * output)
    runner.run(log, bar)
    bar.close()
    return {
        "requests": n,
        "prompt": prompt_len,
        "output": output,
        "evicted_blocks": stats.evicted_blocks - evicted if stats else None,
        "output_tokens": log.tokens[-1],
        "wall_s": round(log.t[-1], 3),
        "tok_s": _round(log.rate(0, log.last)),
        "finish_reasons": _finishes(streams),
    }


def plugin_streams(runner: Runner, sizes: Sizes) -> dict:
    """P2 plugin: many streams decoding far past their cache."""
    n, tokens = sizes.p2_streams, sizes.p2_tokens
    past = _past_fill(runner, sizes)
    stats = runner.scheduler.sink_stats
    stats.max_blocks_held = 0  # the most blocks held during this run only
    evicted = stats.evicted_blocks
    prompts = _prompts(n, sizes.p2_prompt, 2000, runner.vocab)
    log = StepLog()
    streams = [runner.add(p, tokens) for p in prompts]
    bar = _bar("P2 plugin streams", n * tokens)
    runner.run(
        log, bar, marks={"steady": lambda: all(s.length >= past for s in streams)}
    )
    bar.close()
    start = log.marks.get("steady")
    end = log.marks.get("first_finish", log.last)
    steady = None if start is None else log.rate(start, end)
    if steady is None:
        raise RuntimeError(
            f"streams of {tokens} tokens never ran past the fill ({past} tokens)"
        )
    return {
        "streams": n,
        "prompt": sizes.p2_prompt,
        "tokens_per_stream": tokens,
        "cache_slots": sizes.fill_tokens(runner.block_size),
        "steady_from_tokens_per_stream": round(log.tokens[start] / n, 1),
        "steady_to_tokens_per_stream": round(log.tokens[end] / n, 1),
        "tok_s": _round(steady),
        "overall_tok_s": _round(log.rate(0, log.last)),
        "kv_blocks_per_stream_max": stats.max_blocks_held,
        "evicted_blocks": stats.evicted_blocks - evicted,
        "finish_reasons": _finishes(streams),
        "curve": log.curve(per=n),
        "memory": _thin(log.memory),
    }


def long_stream(runner: Runner, sizes: Sizes) -> dict:
    """P2 flatness: one stream alone; tok/s over the last vs first 10% past fill."""
    tokens = sizes.long_tokens
    past = _past_fill(runner, sizes)
    log = StepLog()
    stream = runner.add(random_tokens(sizes.p2_prompt, 3000, runner.vocab), tokens)
    bar = _bar("P2 long stream", tokens)
    runner.run(log, bar, marks={"filled": lambda: stream.length >= past})
    bar.close()
    start, end = log.marks.get("filled"), log.last
    if start is None or end - start < 20:
        raise RuntimeError(f"a {tokens}-token stream is too short to pass {past}")
    after = log.tokens[end] - log.tokens[start]
    first_end = log.index_at(log.tokens[start] + after / 10)
    last_start = log.index_at(log.tokens[end] - after / 10)
    first, last = log.rate(start, first_end), log.rate(last_start, end)
    return {
        "tokens": tokens,
        "prompt": sizes.p2_prompt,
        "cache_slots": sizes.fill_tokens(runner.block_size),
        "filled_at_tokens": log.tokens[start],
        "first_10pct_tok_s": _round(first),
        "last_10pct_tok_s": _round(last),
        "last_vs_first": _round(last / first, 4) if first and last else None,
        "overall_tok_s": _round(log.rate(0, end)),
        "kv_blocks_per_stream_max": runner.scheduler.sink_stats.max_blocks_held,
        "finish_reasons": _finishes([stream]),
        "curve": log.curve(per=1),
        "memory": _thin(log.memory),
    }


def baseline_streams(runner: Runner, sizes: Sizes) -> dict:
    """P2 baseline: stock vLLM decoding at a ~4k context, prefill excluded."""
    n, prompt_len = sizes.p2_streams, sizes.p2_base_prompt
    output = sizes.p2_base_output
    prompts = _prompts(n, prompt_len, 4000, runner.vocab)
    log = StepLog()
    streams = [runner.add(p, output) for p in prompts]
    bar = _bar("P2 baseline", n * output)
    runner.run(log, bar, marks={"decoding": lambda: all(s.generated for s in streams)})
    bar.close()
    start = log.marks["decoding"]
    end = log.marks.get("first_finish", log.last)
    return {
        "streams": n,
        "prompt": prompt_len,
        "output": output,
        "context": [prompt_len, prompt_len + output],
        "decode_tok_s": _round(log.rate(start, end)),
        "overall_tok_s": _round(log.rate(0, log.last)),
        "finish_reasons": _finishes(streams),
        "memory": _thin(log.memory),
    }


def dense(runner: Runner, sizes: Sizes) -> dict:
    """P3: stock vLLM decoding at a long dense context, as many streams as fit."""
    context, output = sizes.p3_context, sizes.p3_output
    block = runner.block_size
    # Requests keep running while the last prompts are prefilled; the decode
    # window opens once every stream has its first token.
    prefill_steps = -(-sizes.p3_max_streams * context // runner.max_num_batched_tokens)
    limit = runner.engine.vllm_config.model_config.max_model_len - context - 1
    max_tokens = min(output + prefill_steps + 32, limit)
    # A little slack: vLLM must admit every stream at once.
    fit = int(runner.idle_free * 0.97) // -(-(context + max_tokens) // block)
    n = min(sizes.p3_max_streams, fit)
    if n < 1 or max_tokens <= output:
        raise RuntimeError(f"no {context}-token stream fits (max_tokens {max_tokens})")
    prompts = _prompts(n, context, 5000, runner.vocab)
    log = StepLog()
    streams = [runner.add(p, max_tokens) for p in prompts]
    bar = _bar(f"P3 dense {context} ctx x{n}", n * max_tokens)

    def decoded_enough() -> bool:
        start = log.marks.get("decoding")
        return start is not None and log.last - start >= output

    runner.run(
        log,
        bar,
        stop=decoded_enough,
        marks={"decoding": lambda: all(s.generated for s in streams)},
    )
    bar.close()
    start = log.marks.get("decoding")
    end = log.marks.get("first_finish", log.last)
    rate = None if start is None else log.rate(start, end)
    if rate is None:
        raise RuntimeError("the dense streams never decoded together")
    return {
        "context": context,
        "output": output,
        "streams_max": sizes.p3_max_streams,
        "streams": n,
        "streams_running_max": log.max_running,
        "decode_steps": end - start,
        "decode_tok_s": _round(rate),
        "overall_tok_s": _round(log.rate(0, log.last)),
        "memory": _thin(log.memory),
    }


def plugin_per_token(runner: Runner, sizes: Sizes) -> dict:
    """P4 plugin: b streams (prompt = one cache) decoding past the fill."""
    past = _past_fill(runner, sizes)
    prompt_len = sizes.cache_tokens
    max_tokens = past - prompt_len + sizes.p4_plugin_tokens
    batches = {}
    for b in sizes.p4_batches:
        runner.reset()
        prompts = _prompts(b, prompt_len, 6000, runner.vocab)
        log = StepLog()
        streams = [runner.add(p, max_tokens) for p in prompts]
        bar = _bar(f"P4 plugin x{b}", b * max_tokens)
        runner.run(
            log,
            bar,
            marks={"steady": lambda s=streams: all(x.length >= past for x in s)},
        )
        bar.close()
        start = log.marks["steady"]
        end = log.marks.get("first_finish", log.last)
        batches[str(b)] = {
            "streams": b,
            "prompt": prompt_len,
            "decoded_past_fill": sizes.p4_plugin_tokens,
            "tok_s": _round(log.rate(start, end)),
            "finish_reasons": _finishes(streams),
        }
    return {"window": prompt_len, "batches": batches}


def recompute(runner: Runner, sizes: Sizes) -> dict:
    """P4 baseline: sliding window with re-computation on stock vLLM.

    Each new token of each stream is a fresh request whose prompt is the
    stream's last W tokens, ``max_tokens=1`` (prefix caching is off).
    """
    window = sizes.cache_tokens
    batches = {}
    for b, steps in zip(sizes.p4_batches, sizes.p4_recompute_steps, strict=True):
        runner.reset()
        contexts = _prompts(b, window, 7000, runner.vocab)
        log = StepLog()
        bar = _bar(f"P4 re-computation x{b}", b * (steps + 1))
        start = None
        for step in range(steps + 1):  # step 0 is not timed
            streams = [runner.add(c[-window:], 1, keep=1) for c in contexts]
            runner.run(log, bar)
            for context, stream in zip(contexts, streams, strict=True):
                context.append(stream.tail[-1])
            if step == 0:
                start = time.perf_counter()
        bar.close()
        elapsed = time.perf_counter() - start
        batches[str(b)] = {
            "streams": b,
            "steps": steps,
            "prompt": window,
            "tok_s": _round(b * steps / elapsed),
            "s_per_step": round(elapsed / steps, 4),
        }
    return {"window": window, "batches": batches}


def half_window_restart(runner: Runner, sizes: Sizes) -> dict:
    """P4 baseline: truncate to the last W/2 tokens and re-prefill when full.

    Each stream generates from a W/2 context until its context reaches W,
    then restarts with its last W/2 tokens as the prompt, until it has
    generated as many tokens as a P2 plugin stream.
    """
    n, tokens = sizes.p2_streams, sizes.p2_tokens
    window = sizes.cache_tokens
    half = window // 2
    remaining: dict[str, int] = {}
    owner: dict[str, int] = {}
    reasons: collections.Counter = collections.Counter()
    counts = {"prefills": 0}

    def start(k: int, prompt: list[int]) -> None:
        stream = runner.add(prompt, min(half, remaining[k]), keep=half)
        owner[stream.rid] = k
        counts["prefills"] += 1

    def on_finish(stream: Stream) -> None:
        k = owner[stream.rid]
        reasons[stream.finish_reason] += 1
        remaining[k] -= stream.generated
        if remaining[k] > 0 and stream.finish_reason == "length":
            start(k, list(stream.tail))

    prompts = _prompts(n, half, 8000, runner.vocab)
    log = StepLog()
    for k, prompt in enumerate(prompts):
        remaining[k] = tokens
        start(k, prompt)
    bar = _bar("P4 half-window restarts", n * tokens)
    runner.run(log, bar, on_finish=on_finish)
    bar.close()
    return {
        "streams": n,
        "tokens_per_stream": tokens,
        "window": window,
        "restart_prompt": half,
        "prefills": counts["prefills"],
        "tok_s": _round(log.rate(0, log.last)),
        "generated": log.tokens[-1],
        "finish_reasons": dict(reasons),
        "curve": log.curve(per=n),
    }


def profile(runner: Runner, sizes: Sizes) -> dict:
    """P5: the plugin's share of GPU time over decode steps past the fill."""
    import torch
    from torch.profiler import ProfilerActivity

    n = sizes.p2_streams
    warm, steps = sizes.p5_warm_steps, sizes.p5_steps
    prompt_len = sizes.fill_tokens(runner.block_size)
    prompts = _prompts(n, prompt_len, 9000, runner.vocab)
    streams = [runner.add(p, warm + steps + 64) for p in prompts]
    log = StepLog()
    bar = _bar("P5 profile", n * (warm + steps))
    runner.run(log, bar, stop=lambda: all(s.generated >= warm for s in streams))
    cuda = runner.device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    count = {"steps": 0}

    def enough() -> bool:
        count["steps"] += 1
        return count["steps"] >= steps

    before = log.tokens[-1]
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        runner.run(log, bar, stop=enough)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    bar.close()
    tokens = log.tokens[-1] - before
    runner.abort_unfinished()
    return {
        "streams": n,
        "prompt": prompt_len,
        "steps": count["steps"],
        "tokens": tokens,
        "wall_s": round(wall, 4),
        **plugin_share(prof, wall),
    }


def plugin_share(prof, wall_s: float) -> dict:
    """Device time inside the ``sink::*`` ranges over device time of all kernels.

    A range's device time is that of the kernels launched inside it
    (``device_time_total`` of its CPU-side event; nested ``sink::`` ranges are
    counted once). Without device kernels (CPU runs) the share is the ranges'
    CPU time over the wall time of the profiled steps.
    """
    from torch.autograd import DeviceType

    def is_sink(event) -> bool:
        return event.name.startswith("sink::")

    def nested(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if is_sink(parent):
                return True
            parent = parent.cpu_parent
        return False

    ranges: dict[str, dict] = {}
    for event in prof.events():
        if event.device_type != DeviceType.CPU or not is_sink(event):
            continue
        if nested(event):
            continue
        entry = ranges.setdefault(
            event.name, {"calls": 0, "device_us": 0.0, "cpu_us": 0.0}
        )
        entry["calls"] += 1
        entry["device_us"] += event.device_time_total
        entry["cpu_us"] += event.cpu_time_total
    averages = prof.key_averages()
    kernels = [
        e
        for e in averages
        if e.device_type != DeviceType.CPU
        and not getattr(e, "is_user_annotation", False)
    ]
    device_total = sum(e.self_device_time_total for e in kernels)
    sink_device = sum(r["device_us"] for r in ranges.values())
    sink_cpu = sum(r["cpu_us"] for r in ranges.values())
    if device_total > 0:
        share = sink_device / device_total
        basis = "sink:: kernel time / time of all kernels (device)"
        top = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)
        table = [
            {
                "name": e.key[:160],
                "calls": e.count,
                "self_device_us": round(e.self_device_time_total, 1),
                "share": round(e.self_device_time_total / device_total, 5),
            }
            for e in top[:25]
        ]
    else:
        share = sink_cpu / (wall_s * 1e6)
        basis = "sink:: CPU time / wall time of the steps (no device kernels)"
        top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)
        table = [
            {
                "name": e.key[:160],
                "calls": e.count,
                "self_cpu_us": round(e.self_cpu_time_total, 1),
            }
            for e in top[:25]
        ]
    return {
        "share": round(share, 6),
        "basis": basis,
        "device_total_us": round(device_total, 1),
        "sink_device_us": round(sink_device, 1),
        "sink_cpu_us": round(sink_cpu, 1),
        "ranges": {
            k: {**v, "device_us": round(v["device_us"], 1)} for k, v in ranges.items()
        },
        "top": table,
    }


def soak(runner: Runner, sizes: Sizes) -> dict:
    """The long stream plus renewed streams for a while: errors and memory."""
    n, seconds = sizes.p2_streams, sizes.soak_seconds
    deadline = time.perf_counter() + seconds
    reasons: collections.Counter = collections.Counter()
    errors: list[str] = []
    seed = iter(range(10000, 10_000_000))

    def add_stream() -> None:
        prompt = random_tokens(sizes.p2_prompt, next(seed), runner.vocab)
        runner.add(prompt, sizes.soak_stream_tokens, prefix="soak")

    def on_finish(stream: Stream) -> None:
        reasons[stream.finish_reason] += 1
        if stream.finish_reason != "length":
            errors.append(f"{stream.rid} finished with {stream.finish_reason}")
        if time.perf_counter() < deadline:
            add_stream()

    log = StepLog()
    long = runner.add(random_tokens(sizes.p2_prompt, 3, runner.vocab), 1 << 30)
    for _ in range(n):
        add_stream()
    bar = _bar(f"soak {seconds:.0f} s", None)
    try:
        runner.run(
            log, bar, stop=lambda: time.perf_counter() >= deadline, on_finish=on_finish
        )
    except Exception:  # an engine error is what the soak is for: count it
        errors.append(traceback.format_exc())
    bar.close()
    wall = log.t[-1]
    runner.abort_unfinished()
    stats = runner.scheduler.sink_stats
    used = [m["used_mib"] for m in log.memory]
    blocks = [m["kv_blocks"] for m in log.memory]
    return {
        "seconds": seconds,
        "wall_s": round(wall, 1),
        "streams": n,
        "stream_tokens": sizes.soak_stream_tokens,
        "long_stream_tokens": long.generated,
        "generated": log.tokens[-1],
        "tok_s": _round(log.rate(0, log.last)),
        "finish_reasons": dict(reasons),
        "errors": len(errors),
        "error_messages": errors[:20],
        "blocks_leaked": runner.idle_free - runner.free_blocks(),
        "kv_blocks_max": max(blocks, default=None),
        "used_mib_first": _round(used[0] if used else None, 1),
        "used_mib_last": _round(used[-1] if used else None, 1),
        "used_mib_max": _round(max(used, default=None), 1),
        "preemptions": stats.num_preemptions,
        "evicted_blocks": stats.evicted_blocks,
        "memory": _thin(log.memory),
    }


RUNNERS = {
    "p1_plugin": throughput,
    "p1_baseline": throughput,
    "p2_plugin": plugin_streams,
    "p2_long": long_stream,
    "p2_baseline": baseline_streams,
    "p3_dense": dense,
    "p4_plugin": plugin_per_token,
    "p4_recompute": recompute,
    "p4_restart": half_window_restart,
    "p5_profile": profile,
    "soak": soak,
}
