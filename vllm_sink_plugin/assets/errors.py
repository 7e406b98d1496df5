# SPDX-License-Identifier: Apache-2.0
"""Errors raised while obtaining or building assets."""

from __future__ import annotations

from pathlib import Path


class AssetError(RuntimeError):
    """An asset could not be obtained or built; the message says how to fix it."""


class HashMismatchError(AssetError):
    """A downloaded or hand-placed file does not have the pinned sha256."""

    def __init__(self, path: Path, expected: str, actual: str, hint: str = "") -> None:
        """Builds the message naming the file and both hashes.

        Args:
            path: The offending file.
            expected: The pinned sha256 (hex).
            actual: The sha256 (hex) the file really has.
            hint: Appended to the message, e.g. where to get the right file.
        """
        super().__init__(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}. "
            "The file is corrupt or not the pinned release; delete it and rerun."
            + (f"\n{hint}" if hint else "")
        )
        self.path = path
        self.expected = expected
        self.actual = actual
