# SPDX-License-Identifier: Apache-2.0
"""In-process CPU engines for white-box tests of the sink policy."""

from __future__ import annotations

import contextlib
import gc
import os

from tests.helpers import CPU_ENGINE_KWARGS


@contextlib.contextmanager
def in_process_llm(model, **kwargs):
    """An ``LLM`` whose engine core and worker run in this process.

    Yields:
        ``(llm, scheduler)``; the engine is torn down on exit so that the
        next one can start in the same process.
    """
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    llm = LLM(str(model), **{**CPU_ENGINE_KWARGS, **kwargs})
    try:
        yield llm, llm.llm_engine.engine_core.engine_core.scheduler
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        cleanup_dist_env_and_memory()


def free_blocks(scheduler) -> int:
    return scheduler.kv_cache_manager.block_pool.get_num_free_blocks()


def sink_config(num_sink_tokens: int, sink_window: int) -> dict:
    return {
        "kv_policy": "sink",
        "num_sink_tokens": num_sink_tokens,
        "sink_window": sink_window,
    }


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
