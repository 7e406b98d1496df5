# SPDX-License-Identifier: Apache-2.0
"""Tensor parallel summary: the P2 plugin rate at TP=1 vs TP=N, greedy equality.

    python -m benchmarks.tp_summary RUN_DIR [--write DIR]

RUN_DIR holds what ``scripts/gpu.sh PARTS tp`` left there:

    RUN_DIR/tp1/raw.json       gpu_bench --only p2 --tasks p2_plugin (one GPU)
    RUN_DIR/tpN/raw.json       the same with --tensor-parallel-size N, Ray
    RUN_DIR/tp_greedy.json     tests/gpu/test_gpu_tp.py's greedy comparison

Writes ``summary.json`` (``tp1_tok_s``, ``tp2_tok_s``, ``outputs_equal``,
``command``, ...) and ``summary.md`` into ``--write`` (default RUN_DIR).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _run(folder: Path) -> dict:
    raw = json.loads((folder / "raw.json").read_text())
    task = raw["tasks"].get("p2_plugin", {})
    if "tok_s" not in task:
        raise SystemExit(f"{folder}/raw.json: p2_plugin has no result: {task}")
    engine = next(e for n, e in raw["engines"].items() if n.startswith("plugin"))
    return {
        "tok_s": task["tok_s"],
        "overall_tok_s": task["overall_tok_s"],
        "kv_blocks_per_stream_max": task["kv_blocks_per_stream_max"],
        "tensor_parallel_size": engine["tensor_parallel_size"],
        "distributed_executor_backend": engine["distributed_executor_backend"],
        "gpu": raw["meta"]["gpu"],
        "command": raw["meta"]["command"],
    }


def summarize(run_dir: Path) -> dict:
    tp1 = _run(run_dir / "tp1")
    multi = sorted(p for p in run_dir.glob("tp[2-9]*") if (p / "raw.json").is_file())
    if not multi:
        raise SystemExit(f"{run_dir}: no tpN/raw.json with N > 1")
    tpn = _run(multi[0])
    n = tpn["tensor_parallel_size"]
    greedy_path = run_dir / "tp_greedy.json"
    greedy = json.loads(greedy_path.read_text()) if greedy_path.is_file() else None
    return {
        "gpu": tp1["gpu"],
        "workload": "P2 (small scale): 64 streams x 8192 tokens past a 4 + 4092 "
        "cache, llama-1b shapes (dummy weights), bf16, block 16",
        "tp1_tok_s": tp1["tok_s"],
        f"tp{n}_tok_s": tpn["tok_s"],
        f"tp{n}_vs_tp1": round(tpn["tok_s"] / tp1["tok_s"], 3),
        "tp1_overall_tok_s": tp1["overall_tok_s"],
        f"tp{n}_overall_tok_s": tpn["overall_tok_s"],
        "kv_blocks_per_stream_max": {
            "tp1": tp1["kv_blocks_per_stream_max"],
            f"tp{n}": tpn["kv_blocks_per_stream_max"],
        },
        f"tp{n}_executor": tpn["distributed_executor_backend"],
        "outputs_equal": greedy["outputs_equal"] if greedy else None,
        "greedy": greedy,
        "command": f"{tp1['command']} ; {tpn['command']}",
    }


def write(summary: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    keys = [k for k in summary if k.endswith("_tok_s") or k.endswith("_vs_tp1")]
    lines = [
        f"# Tensor parallel on {summary['gpu']}",
        "",
        summary["workload"] + ".",
        "",
        "| key | value |",
        "|---|---|",
        *(f"| {k} | {summary[k]} |" for k in keys),
        f"| outputs_equal (greedy, TP=1 vs TP=N) | {summary['outputs_equal']} |",
        "",
        f"Commands: `{summary['command']}`",
        "",
    ]
    (folder / "summary.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tp_summary")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--write", type=Path, help="output folder (default RUN_DIR)")
    args = parser.parse_args(argv)
    summary = summarize(args.run_dir)
    write(summary, args.write or args.run_dir)
    print(json.dumps({k: v for k, v in summary.items() if k != "greedy"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
