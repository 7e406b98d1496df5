# SPDX-License-Identifier: Apache-2.0
"""Command line: ``python -m vllm_sink_plugin.assets {fetch,list,path} ...``.

Examples::

    python -m vllm_sink_plugin.assets fetch smollm2 bible
    python -m vllm_sink_plugin.assets fetch all
    python -m vllm_sink_plugin.assets list
    python -m vllm_sink_plugin.assets path smollm2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from vllm_sink_plugin.assets.cache import cache_root
from vllm_sink_plugin.assets.errors import AssetError
from vllm_sink_plugin.assets.registry import ASSETS, cached_path, fetch


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the process exit status."""
    # Conversions read local files only; make sure nothing reaches for a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except AssetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _fetch(args: argparse.Namespace) -> int:
    """Fetches the named assets (``all`` for every one), printing their paths."""
    names = list(ASSETS) if "all" in args.names else args.names
    for name in names:
        start = time.monotonic()
        path = fetch(name)
        print(f"{name}\t{path}\t({time.monotonic() - start:.1f} s)", flush=True)
    return 0


def _list(args: argparse.Namespace) -> int:
    """Lists every asset with its cache state."""
    print(f"cache: {cache_root()}")
    for name, asset in ASSETS.items():
        state = "cached" if cached_path(name) else "missing"
        print(f"{name:20} {state:8} {asset.description}")
    return 0


def _path(args: argparse.Namespace) -> int:
    """Prints a cached asset's path; fails if it has not been fetched."""
    path = cached_path(args.name)
    if path is None:
        print(
            f"error: {args.name} is not cached under {cache_root()}; run "
            f"`python -m vllm_sink_plugin.assets fetch {args.name}` first.",
            file=sys.stderr,
        )
        return 1
    print(path)
    return 0


def _parser() -> argparse.ArgumentParser:
    """Builds the argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m vllm_sink_plugin.assets",
        description="Obtain and cache model and data assets without a model hub.",
    )
    commands = parser.add_subparsers(required=True)
    fetch_cmd = commands.add_parser("fetch", help="build assets unless cached")
    fetch_cmd.add_argument("names", nargs="+", choices=[*ASSETS, "all"])
    fetch_cmd.set_defaults(command=_fetch)
    commands.add_parser("list", help="list assets").set_defaults(command=_list)
    path_cmd = commands.add_parser("path", help="print a cached asset's path")
    path_cmd.add_argument("name", choices=list(ASSETS))
    path_cmd.set_defaults(command=_path)
    return parser


if __name__ == "__main__":
    sys.exit(main())
