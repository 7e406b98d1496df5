# SPDX-License-Identifier: Apache-2.0
"""Decode speed of the sink policy vs stock vLLM on the CPU, in one command.

    python -m benchmarks.cpu_speed [--out benchmarks/results/cpu] [--reps 3]
        [--tokens 256] [--eager] [--keys rotated|raw]

The embedded SmolLM2-135M (bf16, real weights, torch.compile on unless
``--eager``), ``max_model_len`` 1024, block size 32. The plugin engine keeps
4 sinks (one block) + a 480-token window: a 512-slot cache. Three
measurements per engine, decode rates only (prefill excluded), greedy with
``ignore_eos``:

==============  ===========================================================
decode_1        1 stream. Sink: past the fill, every block evicting. Stock:
                decoding from context C - T/2 to C + T/2 (C = 512, the sink
                cache; T = ``--tokens``), i.e. at the same mean context.
decode_8        the same with 8 streams.
no_eviction     8 requests of 64 + T tokens (the sink cache never fills).
==============  ===========================================================

Each repetition runs the stock engine and the plugin engine, each in its own
child process (``spawn``; the stock one with ``VLLM_PLUGINS=""``), the order
alternating between repetitions. Reported: each rate's median and spread
(min, max) over the repetitions, and the plugin/stock ratio of each
repetition (median and spread), with the CPU named. Writes
``OUT/speed.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

from benchmarks.host import host_cpu
from benchmarks.repeats import spread

MAX_MODEL_LEN = 1024
BLOCK_SIZE = 32
NUM_SINKS = 4
WINDOW = 480
CACHE = 32 + WINDOW  # sink slots (one block) + window slots
KV_CACHE_BYTES = 128 << 20
WORKLOADS = ("decode_1", "decode_8", "no_eviction")


def _decode(runner, streams: int, tokens: int, sink: bool) -> dict:
    """Decode rate of ``streams`` streams at the sink cache's context."""
    from benchmarks.gpu.engine import StepLog, random_tokens, tqdm

    if sink:  # fill the cache, then measure ``tokens`` more, all evicting
        prompt_len = 64
        start_len = CACHE + 2 * BLOCK_SIZE
    else:  # the same mean context: C - T/2 .. C + T/2
        prompt_len = start_len = CACHE - tokens // 2
    end_len = start_len + tokens
    prompts = [random_tokens(prompt_len, 100 + k, runner.vocab) for k in range(streams)]
    handles = [runner.add(p, end_len - prompt_len) for p in prompts]
    log = StepLog()
    runner.run(
        log,
        tqdm(disable=True),
        marks={"start": lambda: all(h.length >= start_len for h in handles)},
    )
    start = log.marks["start"]
    stats = getattr(runner.scheduler, "sink_stats", None)
    return {
        "streams": streams,
        "context": [start_len, end_len],
        "tok_s": round(log.rate(start, log.last), 3),
        "evicted_blocks": stats.evicted_blocks if stats else None,
    }


def _no_eviction(runner, tokens: int) -> dict:
    from benchmarks.gpu.engine import StepLog, random_tokens, tqdm

    stats = getattr(runner.scheduler, "sink_stats", None)
    before = stats.evicted_blocks if stats else 0
    for k in range(8):
        runner.add(random_tokens(64, 200 + k, runner.vocab), tokens)
    log = StepLog()
    runner.run(log, tqdm(disable=True))
    # From the end of the first step (prefill) on: decode only.
    return {
        "streams": 8,
        "context": [64, 64 + tokens],
        "tok_s": round(log.rate(1, log.last), 3),
        "evicted_blocks": (stats.evicted_blocks - before) if stats else None,
    }


def child_main(job: dict, queue) -> None:
    """One engine (``job['sink']``): warm up, run every workload, report."""
    os.environ.update(job["env"])  # before vLLM is imported
    try:
        from vllm import LLM

        from benchmarks.gpu.engine import Runner
        from vllm_sink_plugin.assets import fetch

        config = {}
        if job["sink"]:
            config = {
                "kv_policy": "sink",
                "num_sink_tokens": NUM_SINKS,
                "sink_window": WINDOW,
            }
        start = time.perf_counter()
        llm = LLM(
            str(fetch("smollm2")),
            max_model_len=MAX_MODEL_LEN,
            block_size=BLOCK_SIZE,
            dtype="bfloat16",
            kv_cache_memory_bytes=KV_CACHE_BYTES,
            enforce_eager=job["eager"],
            skip_tokenizer_init=True,
            seed=0,
            additional_config=config,
        )
        runner = Runner(llm, device="cpu", vocab=49152, memory_interval=1e9)
        runner.warm_up(MAX_MODEL_LEN, CACHE)
        result = {"start_s": round(time.perf_counter() - start, 1)}
        result["decode_1"] = _decode(runner, 1, job["tokens"], job["sink"])
        runner.reset()
        result["decode_8"] = _decode(runner, 8, job["tokens"], job["sink"])
        runner.reset()
        result["no_eviction"] = _no_eviction(runner, job["tokens"])
        runner.reset()
        llm.llm_engine.engine_core.shutdown()
        queue.put(result)
    except Exception as error:  # reported by the parent
        import traceback

        traceback.print_exc()
        queue.put({"error": repr(error)})


def run_engine(sink: bool, args) -> dict:
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": "WARNING"}
    if not sink:
        env["VLLM_PLUGINS"] = ""
    elif args.keys == "raw":
        env["VLLM_SINK_ROTATED_KEYS"] = "0"
    job = {"sink": sink, "env": env, "eager": args.eager, "tokens": args.tokens}
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=child_main, args=(job, queue))
    child.start()
    result = queue.get()
    child.join()
    if "error" in result:
        raise RuntimeError(f"{'sink' if sink else 'stock'} engine: {result['error']}")
    return result


def summarize(runs: list[dict]) -> dict:
    """Medians and spreads of each side's rates and of the per-rep ratios."""
    out = {}
    for name in WORKLOADS:
        stock = [run["stock"][name]["tok_s"] for run in runs]
        sink = [run["sink"][name]["tok_s"] for run in runs]
        out[name] = {
            "stock_tok_s": spread(stock, 3),
            "sink_tok_s": spread(sink, 3),
            "ratio": spread([s / b for s, b in zip(sink, stock, strict=True)], 3),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cpu_speed", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--eager", action="store_true", help="no torch.compile")
    parser.add_argument(
        "--keys",
        choices=("rotated", "raw"),
        default="rotated",
        help="the plugin's CPU design (rotated: the default)",
    )
    args = parser.parse_args(argv)
    if args.reps < 1 or args.tokens < 2 * BLOCK_SIZE:
        parser.error(f"--reps >= 1 and --tokens >= {2 * BLOCK_SIZE}")
    runs = []
    for rep in range(args.reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        run = {}
        for sink in order:
            side = "sink" if sink else "stock"
            print(f"rep {rep + 1}/{args.reps}: {side} ...", flush=True)
            run[side] = run_engine(sink, args)
            print(f"  {json.dumps(run[side])}", flush=True)
        runs.append(run)
    result = {
        "command": "python -m benchmarks.cpu_speed " + " ".join(sys.argv[1:]),
        "cpu": host_cpu(),
        "model": "SmolLM2-135M-Instruct (bf16)",
        "compiled": not args.eager,
        "keys": args.keys,
        "cache": {"sinks": NUM_SINKS, "window": WINDOW, "slots": CACHE},
        "tokens": args.tokens,
        "reps": args.reps,
        "summary": summarize(runs),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"speed{'-eager' if args.eager else ''}-{args.keys}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['cpu']}; compiled: {not args.eager}; keys: {args.keys}")
    print(f"{'workload':<12} {'stock tok/s':>12} {'sink tok/s':>12} {'ratio':>20}")
    for name, row in result["summary"].items():
        ratio = row["ratio"]
        print(
            f"{name:<12} {row['stock_tok_s']['median']:>12} "
            f"{row['sink_tok_s']['median']:>12} "
            f"{ratio['median']:>8} [{ratio['min']}, {ratio['max']}]"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
