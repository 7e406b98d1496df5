# SPDX-License-Identifier: Apache-2.0
"""All 160 MT-Bench turns as one endless conversation, in constant KV memory.

One streaming-input request (``vllm_sink_plugin.sessions.ChatSession``) on an
``AsyncLLM`` with ``--kv-policy sink``: each turn is prefilled once, earlier
turns never again, and the window rolls so the cache stays bounded. Per turn
it records the input/answer tokens, time to first token, and the KV blocks the
session holds (``SchedulerStats.sink_stats``, the data behind
``vllm:sink_request_cache_blocks``, via ``SinkStatsRecorder``).

    python examples/mtbench_session.py                 # 160 turns, SmolLM2
    python examples/mtbench_session.py --turns 20 --max-tokens 32 --out r.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path


def mtbench_turns(limit: int | None) -> list[str]:
    from vllm_sink_plugin.assets import fetch

    path = Path(fetch("mtbench"))
    path = path / "mtbench.jsonl" if path.is_dir() else path
    turns = [
        turn
        for line in path.read_text().splitlines()
        for turn in json.loads(line)["turns"]
    ]
    return turns[:limit] if limit else turns


def build_engine(args):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from vllm_sink_plugin.assets import smollm2_path
    from vllm_sink_plugin.metrics import SinkStatsRecorder

    engine_args = AsyncEngineArgs(
        model=str(args.model or smollm2_path()),
        max_model_len=args.max_model_len,
        block_size=args.block_size,
        enforce_eager=args.enforce_eager,
        kv_cache_memory_bytes=args.kv_cache_mib << 20,
        additional_config={
            "kv_policy": "sink",
            "num_sink_tokens": args.num_sink_tokens,
            "sink_window": args.sink_window,
        },
    )
    return AsyncLLM.from_engine_args(engine_args, stat_loggers=[SinkStatsRecorder])


async def run(args) -> dict:
    from vllm import SamplingParams

    from vllm_sink_plugin.metrics import SinkStatsRecorder
    from vllm_sink_plugin.sessions import ChatSession

    questions = mtbench_turns(args.turns)
    engine = build_engine(args)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    rows = []
    start = time.perf_counter()
    try:
        async with ChatSession(
            engine, params, system="You are a helpful assistant."
        ) as chat:
            for i, question in enumerate(questions):
                mark = len(SinkStatsRecorder.seen)
                turn = await chat.send(question)
                latest = SinkStatsRecorder.seen[-1] if SinkStatsRecorder.seen else {}
                rows.append(
                    {
                        "turn": i + 1,
                        "input_tokens": turn.input_tokens,
                        "answer_tokens": len(turn.token_ids),
                        "finish_reason": turn.finish_reason,
                        "ttft_s": round(turn.ttft_s, 4),
                        "total_s": round(turn.total_s, 3),
                        "session_blocks": SinkStatsRecorder.max_blocks_since(mark),
                        "evicted_tokens": latest.get("evicted_tokens"),
                    }
                )
                print(
                    f"turn {i + 1:3d}: in {turn.input_tokens:4d} out "
                    f"{len(turn.token_ids):4d} ttft {turn.ttft_s * 1e3:7.1f} ms "
                    f"blocks {rows[-1]['session_blocks']:3d} "
                    f"evicted {rows[-1]['evicted_tokens']}",
                    flush=True,
                )
    finally:
        engine.shutdown()
    return summarize(rows, args, time.perf_counter() - start)


def summarize(rows: list[dict], args, wall_s: float) -> dict:
    tenth = max(len(rows) // 10, 1)
    first, last = rows[:tenth], rows[-tenth:]
    return {
        "command": "python examples/mtbench_session.py "
        f"--turns {args.turns or 160} --max-tokens {args.max_tokens} "
        f"--sink-window {args.sink_window} --max-model-len {args.max_model_len}",
        "turns": len(rows),
        "answered": sum(r["answer_tokens"] > 0 for r in rows),
        "tokens_streamed": sum(r["input_tokens"] + r["answer_tokens"] for r in rows),
        "max_model_len": args.max_model_len,
        "session_blocks_max": max(r["session_blocks"] for r in rows),
        "session_blocks_first_10pct_max": max(r["session_blocks"] for r in first),
        "session_blocks_last_10pct_max": max(r["session_blocks"] for r in last),
        "ttft_ms_first_10pct_median": 1e3
        * statistics.median(r["ttft_s"] for r in first),
        "ttft_ms_last_10pct_median": 1e3 * statistics.median(r["ttft_s"] for r in last),
        "wall_s": round(wall_s, 1),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF folder (default: embedded SmolLM2)")
    parser.add_argument("--turns", type=int, default=None, help="default: all 160")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--num-sink-tokens", type=int, default=4)
    parser.add_argument("--sink-window", type=int, default=480)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--kv-cache-mib", type=int, default=256)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--out", type=Path, help="write the JSON summary here")
    args = parser.parse_args()
    summary = asyncio.run(run(args))
    rows = summary.pop("rows")
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**summary, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
