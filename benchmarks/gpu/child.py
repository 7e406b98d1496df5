# SPDX-License-Identifier: Apache-2.0
"""The entry point of an engine's child process: one engine, its tasks.

The parent (``benchmarks/gpu_bench.py``) spawns :func:`child_main`, which sets
the environment, starts the engine (:mod:`benchmarks.gpu.engine`) and runs each
task's workload (:mod:`benchmarks.gpu.workloads`). Imports go one way:
``child`` -> ``workloads`` -> ``engine`` -> ``plan``; none of them imports
vLLM before :func:`child_main` has set the environment.

Results go to a JSON file that the child rewrites after every task, so a
crash loses only the task that was running.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks.gpu.engine import Runner, engine_info, engine_kwargs
from benchmarks.gpu.models import vocab_size
from benchmarks.gpu.plan import EngineSpec, Sizes
from benchmarks.gpu.workloads import RUNNERS


def _write(path: Path, result: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)


def child_main(job: dict) -> None:
    """Entry point of an engine's child process (multiprocessing ``spawn``).

    Args:
        job: ``name``, ``spec`` and ``sizes`` (as dicts), ``tasks`` (names),
            ``model_dir``, ``device``, ``gpu_memory_utilization``, ``env``
            and ``result_path``.
    """
    os.environ.update(job["env"])  # before vLLM is imported
    spec = EngineSpec(**job["spec"])
    sizes = Sizes(**job["sizes"])
    path = Path(job["result_path"])
    result: dict = {
        "engine": {"name": job["name"]},
        "tasks": {},
        "done": False,
        "sizes": job["sizes_json"],
        "device": job["device"],
        "parallel": job["parallel"],
    }
    _write(path, result)
    try:
        start = time.perf_counter()
        from vllm import LLM

        kwargs = engine_kwargs(
            spec,
            sizes,
            device=job["device"],
            gpu_memory_utilization=job["gpu_memory_utilization"],
            parallel=job["parallel"],
        )
        llm = LLM(job["model_dir"], **kwargs)
        runner = Runner(
            llm,
            device=job["device"],
            vocab=vocab_size(spec.model),
            memory_interval=sizes.memory_interval,
        )
        runner.warm_up(spec.max_model_len, sizes.fill_tokens(runner.block_size))
        result["engine"].update(
            engine_info(llm, spec, time.perf_counter() - start, runner)
        )
    except Exception:  # reported per task; the parent goes on
        error = traceback.format_exc()
        print(error, file=sys.stderr, flush=True)
        result["engine"]["error"] = error
        for name in job["tasks"]:
            result["tasks"][name] = {"error": f"engine did not start:\n{error}"}
        result["done"] = True
        _write(path, result)
        return
    _write(path, result)
    for name in job["tasks"]:
        start = time.perf_counter()
        try:
            runner.reset()
            outcome = RUNNERS[name](runner, sizes)
        except Exception:  # one failed task must not stop the others
            outcome = {"error": traceback.format_exc()}
            print(f"[{name}] failed:\n{outcome['error']}", file=sys.stderr, flush=True)
        outcome["seconds"] = round(time.perf_counter() - start, 1)
        result["tasks"][name] = outcome
        _write(path, result)
    try:
        runner.reset()
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # the process ends anyway
        traceback.print_exc()
    result["done"] = True
    _write(path, result)
