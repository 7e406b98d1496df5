# SPDX-License-Identifier: Apache-2.0
"""Collects every perplexity run under a folder into one summary.json.

Each run folder (written by ``benchmarks.perplexity``) holds a summary.json
with its command and rows; this writes ``DIR/summary.json`` with one entry per
(model, text, method, cache) and run, so results can be compared without
opening every folder::

    python -m benchmarks.quality_summary benchmarks/results/quality
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def collect(root: Path) -> list[dict]:
    """One record per row of every run folder below ``root``."""
    records = []
    for path in sorted(root.rglob("summary.json")):
        if path.parent == root:
            continue
        run = json.loads(path.read_text())
        for row in run["rows"]:
            records.append(
                {
                    "run": str(path.parent.relative_to(root)),
                    "model": run["model"],
                    "text": run["text"],
                    "device": run.get("device", "cpu"),
                    "dtype": run["dtype"],
                    "chunk": run.get("chunk"),
                    "exact_sinks": run.get("exact_sinks", False),
                    **row,
                    "command": run["command"],
                }
            )
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    records = collect(args.root)
    (args.root / "summary.json").write_text(json.dumps(records, indent=1) + "\n")
    print(f"{len(records)} rows from {args.root}")


if __name__ == "__main__":
    main()
