# SPDX-License-Identifier: Apache-2.0
"""The on-disk cache: where assets live and how they are built atomically.

Each asset is a folder ``$VLLM_SINK_CACHE/<name>/``. It is built in a staging
folder next to it, renamed into place, and only then stamped with a marker file
(written atomically as well). A folder without a matching marker is treated as
absent and rebuilt, so an interrupted build never passes for a finished one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

CACHE_ENV = "VLLM_SINK_CACHE"
MARKER_NAME = ".vllm-sink-asset.json"

Stamp = dict[str, object]
Builder = Callable[[Path, Path], None]


def cache_root() -> Path:
    """Returns the cache root: ``$VLLM_SINK_CACHE`` or ``~/.cache/vllm-sink-plugin``."""
    raw = os.environ.get(CACHE_ENV)
    if raw:
        return Path(raw).expanduser()
    return Path.home() / ".cache" / "vllm-sink-plugin"


def downloads_dir() -> Path:
    """Returns the folder where hand-placed source files are looked up first."""
    return cache_root() / "downloads"


def asset_dir(name: str) -> Path:
    """Returns the folder an asset is (or would be) cached in."""
    return cache_root() / name


def is_complete(directory: Path, stamp: Stamp) -> bool:
    """Tells whether ``directory`` holds a finished build with this exact stamp.

    Args:
        directory: The asset folder.
        stamp: What the build must have been made from (recipe and pinned hashes).

    Returns:
        True when the marker exists and records ``stamp``.
    """
    try:
        return json.loads((directory / MARKER_NAME).read_text()) == stamp
    except (OSError, ValueError):
        return False


def build_atomically(directory: Path, stamp: Stamp, build: Builder) -> None:
    """Builds ``directory`` unless a matching build is already there.

    ``build(work, out)`` gets a scratch folder and the folder to fill; both are
    on the same file system as ``directory`` and removed afterwards. Concurrent
    callers are serialised with a lock file, so each asset is built once.

    Args:
        directory: The asset folder to produce.
        stamp: Recorded in the marker; a different stamp forces a rebuild.
        build: Fills ``out``; may raise, leaving the cache untouched.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    with _locked(directory.parent / f".{directory.name}.lock"):
        if is_complete(directory, stamp):
            return
        staging = Path(
            tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent)
        )
        try:
            work, out = staging / "work", staging / "out"
            work.mkdir()
            out.mkdir()
            build(work, out)
            if directory.exists():
                shutil.rmtree(directory)
            out.rename(directory)
            _write_marker(directory, stamp)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``path`` for the duration of the block."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_marker(directory: Path, stamp: Stamp) -> None:
    """Writes the marker through a temporary file and an atomic rename."""
    temporary = directory / f"{MARKER_NAME}.tmp"
    temporary.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, directory / MARKER_NAME)
