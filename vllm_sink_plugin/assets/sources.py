# SPDX-License-Identifier: Apache-2.0
"""Pinned source files (PyPI releases, Debian packages) and how to obtain them.

A source is looked up first in the drop-in folder ``$VLLM_SINK_CACHE/downloads/``
(for machines without network access), and downloaded otherwise. Either way its
sha256 must match the pinned value, and nothing in a file runs before it does:

* PyPI sdists are fetched straight from the indexes pip is configured with and
  checked before they get their name, so no build ever runs (``indexes``).
  Should that fail, ``pip download`` fetches them like wheels, below, without
  build isolation, so the only downloaded code that runs is the checked sdist's.
* PyPI wheels (and sdists in that fallback) come from ``pip download`` with the
  pinned hash in a ``--require-hashes`` requirements file: pip checks the hash
  right after the download, before it unpacks the file or prepares metadata.
* Debian packages come from ``apt-get download``, which runs nothing in them;
  the sha256 is checked afterwards.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vllm_sink_plugin.assets.cache import downloads_dir
from vllm_sink_plugin.assets.errors import AssetError, HashMismatchError
from vllm_sink_plugin.assets.indexes import download_pinned

_OUTPUT_TAIL = 2000


class Source(Protocol):
    """A pinned file that some client can download."""

    filename: str
    sha256: str

    def download(self, dest: Path) -> None:
        """Downloads the file into ``dest``; raises ``AssetError`` on failure."""

    def origin(self) -> str:
        """Says where a person can get the file by hand."""


@dataclass(frozen=True)
class PyPIFile:
    """One release file of a PyPI project.

    Attributes:
        project: The PyPI project name.
        version: The pinned version.
        filename: The file ``pip download`` saves (wheel or sdist).
        sha256: The pinned sha256 of that file.
        sdist: Whether the file is the source distribution rather than a wheel.
    """

    project: str
    version: str
    filename: str
    sha256: str
    sdist: bool = False

    def download(self, dest: Path) -> None:
        """Downloads the file into ``dest``, its sha256 checked before anything runs.

        An sdist is taken straight from pip's indexes (no build at all), with
        ``pip_download`` as the fallback; a wheel comes from ``pip_download``.

        Raises:
            HashMismatchError: An index served an sdist with another sha256.
            AssetError: The file could not be downloaded, or pip refused it.
        """
        if not self.sdist:
            self.pip_download(dest)
            return
        try:
            download_pinned(
                self.project,
                self.filename,
                self.sha256,
                dest,
                manual_instructions(self),
            )
        except HashMismatchError:
            raise
        except AssetError as error:
            try:
                self.pip_download(dest)
            except AssetError as pip_error:
                raise AssetError(f"{error}\n{pip_error}") from pip_error

    def pip_download(self, dest: Path) -> None:
        """Runs ``pip download`` for the pinned file, hash-checked, into ``dest``.

        The requirement and its pinned hash go to a requirements file read with
        ``--require-hashes``, so pip refuses other bytes as soon as they are
        downloaded, before it unpacks them or prepares (builds) their metadata.

        Raises:
            AssetError: pip failed, e.g. because the hash did not match.
        """
        with tempfile.TemporaryDirectory(prefix="vllm-sink-pip-") as scratch:
            requirements = Path(scratch) / "requirements.txt"
            requirements.write_text(
                f"{self.project}=={self.version} --hash=sha256:{self.sha256}\n"
            )
            _run(self.pip_command(dest, requirements), cwd=dest)

    def pip_command(self, dest: Path, requirements: Path) -> list[str]:
        """Returns the ``pip download`` command line run by ``pip_download``.

        An sdist is prepared without build isolation: isolation would make pip
        download the build requirements (e.g. setuptools) with no hash check
        and run them.

        Args:
            dest: The folder pip saves the file in.
            requirements: A requirements file pinning the file's hash.
        """
        if self.sdist:
            binary = ["--no-binary", ":all:", "--no-build-isolation"]
        else:
            binary = ["--only-binary", ":all:"]
        return (
            [sys.executable, "-m", "pip", "download", "--no-deps", *binary]
            + ["--require-hashes", "-r", str(requirements)]
            + ["--disable-pip-version-check", "--no-input", "-d", str(dest)]
        )

    def origin(self) -> str:
        """Names the PyPI page the file is listed on."""
        return f"https://pypi.org/project/{self.project}/{self.version}/#files"


@dataclass(frozen=True)
class DebianPackage:
    """One binary package from the Debian archive.

    Attributes:
        package: The Debian package name.
        version: The pinned package version.
        filename: The ``.deb`` file name ``apt-get download`` saves.
        sha256: The pinned sha256 of the ``.deb``.
        pool_path: The file's path under a Debian mirror's root.
    """

    package: str
    version: str
    filename: str
    sha256: str
    pool_path: str

    def download(self, dest: Path) -> None:
        """Runs ``apt-get download <package>=<version>`` in ``dest``."""
        _run(["apt-get", "download", f"{self.package}={self.version}"], cwd=dest)

    def origin(self) -> str:
        """Names the file on the main Debian mirror."""
        return f"https://deb.debian.org/debian/{self.pool_path}"


def obtain(source: Source, work: Path) -> Path:
    """Returns a verified local copy of ``source``.

    A file of the same name in the drop-in folder wins; otherwise the file is
    downloaded into ``work``.

    Args:
        source: The pinned file.
        work: Scratch folder for the download.

    Returns:
        The path of the verified file.

    Raises:
        AssetError: The file could not be downloaded; the message says where to
            put a hand-downloaded copy.
        HashMismatchError: The file's sha256 is not the pinned one.
    """
    placed = downloads_dir() / source.filename
    if placed.is_file():
        verify_sha256(placed, source.sha256, manual_instructions(source))
        return placed
    target = work / "downloads"
    target.mkdir(parents=True, exist_ok=True)
    try:
        source.download(target)
    except HashMismatchError:
        raise
    except AssetError as error:
        raise AssetError(f"{error}\n{manual_instructions(source)}") from error
    path = target / source.filename
    if not path.is_file():
        found = sorted(p.name for p in target.iterdir())
        raise AssetError(
            f"the download left {found} instead of {source.filename}.\n"
            + manual_instructions(source)
        )
    verify_sha256(path, source.sha256, manual_instructions(source))
    return path


def manual_instructions(source: Source) -> str:
    """Tells a person how to provide ``source`` by hand."""
    return (
        f"To provide it by hand, download {source.filename} "
        f"(sha256 {source.sha256}) from {source.origin()} on a machine with "
        f"internet access, put it at {downloads_dir() / source.filename}, "
        "then rerun."
    )


def sha256_file(path: Path) -> str:
    """Returns the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, hint: str = "") -> None:
    """Raises ``HashMismatchError`` unless ``path`` has the sha256 ``expected``.

    Args:
        path: The file to check.
        expected: The pinned sha256 (hex).
        hint: Added to the error message, e.g. how to provide the file by hand.
    """
    actual = sha256_file(path)
    if actual != expected:
        raise HashMismatchError(path, expected, actual, hint)


def _run(command: list[str], cwd: Path) -> None:
    """Runs a download command, turning any failure into an ``AssetError``."""
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, check=False
        )
    except FileNotFoundError as error:
        raise AssetError(f"`{command[0]}` is not available here ({error}).") from error
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-_OUTPUT_TAIL:]
        raise AssetError(
            f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
            f"{output}"
        )
