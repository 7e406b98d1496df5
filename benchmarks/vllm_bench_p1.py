# SPDX-License-Identifier: Apache-2.0
"""The no-eviction overhead through vLLM's own CLI: ``vllm bench throughput``.

    python -m benchmarks.vllm_bench_p1 --model DIR [--reps 3] [--num-prompts 1000]
        [--input-len 512] [--output-len 512] [--out FILE] [-- EXTRA VLLM ARGS]

Runs ``vllm bench throughput`` (random dataset, ``--load-format dummy``) with
and without ``--kv-policy sink``, ``--reps`` times each, the order alternating,
the stock side with ``VLLM_PLUGINS=""`` (the plugin is not even imported).
Prompts of 512 + 512 tokens never fill the sink cache (4 + 1020 by default), so
the ratio is the plugin's cost when it evicts nothing. Reports
``vllm_bench_p1_ratio`` (plugin / stock requests per second: the median) with
``_min``, ``_max`` and ``_runs``, and the host CPU, into ``--out`` (JSON).
A user can reproduce it with the tool they already trust::

    vllm bench throughput --model DIR --load-format dummy --dataset-name random \\
        --random-input-len 512 --random-output-len 512 --num-prompts 1000 \\
        [--kv-policy sink]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.host import host_cpu
from benchmarks.repeats import keyed_spread


def vllm_command() -> list[str]:
    """vLLM's CLI (the plugin's wrapper where vLLM is the CPU build)."""
    found = shutil.which("vllm")
    if found:
        return [found]
    return [sys.executable, "-m", "vllm_sink_plugin.cli"]


def bench_command(args, sink: bool, output_json: Path) -> list[str]:
    command = [
        *vllm_command(),
        "bench",
        "throughput",
        "--model",
        args.model,
        "--load-format",
        "dummy",
        "--dataset-name",
        "random",
        "--random-input-len",
        str(args.input_len),
        "--random-output-len",
        str(args.output_len),
        "--num-prompts",
        str(args.num_prompts),
        "--output-json",
        str(output_json),
        *args.extra,
    ]
    if sink:
        command += ["--kv-policy", "sink"]
    return command


def run_side(args, sink: bool) -> dict:
    """One ``vllm bench throughput`` run; its JSON result."""
    env = dict(os.environ)
    if not sink:
        env["VLLM_PLUGINS"] = ""
    with tempfile.TemporaryDirectory() as tmp:
        output_json = Path(tmp) / "result.json"
        command = bench_command(args, sink, output_json)
        print("$ " + " ".join(command), flush=True)
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{'sink' if sink else 'stock'} run failed:\n"
                + (proc.stdout + proc.stderr)[-4000:]
            )
        return json.loads(output_json.read_text())


def ratio_summary(runs: list[dict]) -> dict:
    """Median, min, max and each repetition's plugin/stock requests/s."""
    ratios = [
        round(r["sink"]["requests_per_second"] / r["stock"]["requests_per_second"], 4)
        for r in runs
    ]
    return keyed_spread("vllm_bench_p1_ratio", ratios)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.vllm_bench_p1", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", required=True, help="a model folder (config)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--num-prompts", type=int, default=1000)
    parser.add_argument("--input-len", type=int, default=512)
    parser.add_argument("--output-len", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("vllm_bench_p1.json"))
    args = parser.parse_args(argv)
    args.extra = extra
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    runs = []
    for rep in range(args.reps):
        order = (True, False) if rep % 2 == 0 else (False, True)
        run = {}
        for sink in order:
            run["sink" if sink else "stock"] = run_side(args, sink)
        runs.append(run)
        print(f"rep {rep + 1}: {json.dumps(ratio_summary([run]))}", flush=True)
    result = {
        "command": "python -m benchmarks.vllm_bench_p1 " + " ".join(sys.argv[1:]),
        "host_cpu": host_cpu(),
        **ratio_summary(runs),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
