# SPDX-License-Identifier: Apache-2.0
"""In-process CPU engines for white-box tests of the sink policy."""

from __future__ import annotations

import contextlib
import gc
import os

from tests.helpers import CPU_ENGINE_KWARGS


@contextlib.contextmanager
def in_process_llm(model, *, in_process=True, **kwargs):
    """An ``LLM`` whose engine core and worker run in this process.

    One in-process engine at a time: vLLM's distributed state is per
    process. With ``in_process=False`` the engine core runs in its own
    process (stock default) and the scheduler is not reachable.

    Yields:
        ``(llm, scheduler or None)``; the engine is torn down on exit so
        that the next one can start in the same process.
    """
    saved = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
    from vllm import LLM
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    try:
        llm = LLM(str(model), **{**CPU_ENGINE_KWARGS, **kwargs})
    finally:
        if saved is None:
            del os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"]
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = saved
    core = llm.llm_engine.engine_core
    try:
        yield llm, core.engine_core.scheduler if in_process else None
    finally:
        core.shutdown()
        del llm, core
        gc.collect()
        if in_process:
            cleanup_dist_env_and_memory()


def engine_config(model, **kwargs):
    """``EngineArgs.create_engine_config`` with the sink policy (no engine).

    Startup refusals happen here, before any weight is read.
    """
    from vllm.engine.arg_utils import EngineArgs

    kwargs.setdefault("additional_config", {"kv_policy": "sink", "sink_window": 64})
    args = EngineArgs(
        model=str(model),
        skip_tokenizer_init=True,
        block_size=32,
        **{"max_model_len": 1024, **kwargs},
    )
    return args.create_engine_config()


def free_blocks(scheduler) -> int:
    return scheduler.kv_cache_manager.block_pool.get_num_free_blocks()


def sink_config(num_sink_tokens: int, sink_window: int) -> dict:
    return {
        "kv_policy": "sink",
        "num_sink_tokens": num_sink_tokens,
        "sink_window": sink_window,
    }


def top_logprobs(completion) -> list[list[tuple[int, float]]]:
    """``[(token, logprob), ...]`` per generated step of a vLLM completion."""
    return [[(t, lp.logprob) for t, lp in step.items()] for step in completion.logprobs]


def near_tie_divergence(ours, theirs, ours_top2, theirs_top2, gap=1e-3):
    """Index of the first differing token, checked to be a near-tie.

    Follows vLLM's ``check_logprobs_close``: at the first divergence each
    side's token must be in the other's top-2 with a logprob gap <= ``gap``.

    Returns:
        None when the sequences are equal.

    Raises:
        AssertionError: a divergence that is not a near-tie.
    """
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a == b:
            continue
        mine, other = dict(ours_top2[i]), dict(theirs_top2[i])
        assert b in mine and a in other, f"token {i}: {a} vs {b}, not top-2"
        assert abs(mine[a] - mine[b]) <= gap, f"token {i}: gap {mine[a] - mine[b]}"
        assert abs(other[a] - other[b]) <= gap, f"token {i}: gap {other[b] - other[a]}"
        return i
    return None
