# SPDX-License-Identifier: Apache-2.0
"""Reading members out of wheels, sdists and ``.deb`` files, without extracting.

Members are selected with ``fnmatch`` patterns on their archive paths and read
into memory or streamed into a file handle; nothing is written under a name
taken from the archive, so hostile member paths cannot escape the cache.
"""

from __future__ import annotations

import fnmatch
import io
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import BinaryIO

from vllm_sink_plugin.assets.errors import AssetError

_AR_MAGIC = b"!<arch>\n"
_AR_HEADER_SIZE = 60


def zip_member(archive: Path, pattern: str) -> str:
    """Returns the one member of a zip (wheel) whose path matches ``pattern``.

    Raises:
        AssetError: No member, or more than one, matches.
    """
    with zipfile.ZipFile(archive) as bundle:
        return _single(bundle.namelist(), pattern, archive)


def copy_zip_member(archive: Path, member: str, out: BinaryIO) -> None:
    """Streams one zip member into an open binary file."""
    with zipfile.ZipFile(archive) as bundle, bundle.open(member) as source:
        shutil.copyfileobj(source, out, 1 << 20)


def read_zip_member(archive: Path, pattern: str) -> bytes:
    """Returns the bytes of the one zip member matching ``pattern``."""
    with zipfile.ZipFile(archive) as bundle:
        return bundle.read(_single(bundle.namelist(), pattern, archive))


def read_tar_members(archive: Path, pattern: str) -> dict[str, bytes]:
    """Returns ``{path: bytes}`` for every regular tar member matching ``pattern``."""
    with tarfile.open(archive) as bundle:
        return _read_matching(bundle, pattern)


def read_deb_members(archive: Path, pattern: str) -> dict[str, bytes]:
    """Returns ``{path: bytes}`` for matching files of a ``.deb``'s data tarball.

    A ``.deb`` is an ``ar`` archive whose ``data.tar.*`` member holds the files.

    Raises:
        AssetError: The file is not a ``.deb`` or its data tarball is missing
            or uses a compression Python cannot read.
    """
    payload = _ar_members(archive.read_bytes(), archive)
    names = [name for name in payload if name.startswith("data.tar")]
    if not names:
        raise AssetError(f"{archive} has no data.tar member (found {list(payload)}).")
    try:
        with tarfile.open(fileobj=io.BytesIO(payload[names[0]])) as bundle:
            return _read_matching(bundle, pattern)
    except tarfile.ReadError as error:
        raise AssetError(
            f"cannot read {names[0]} in {archive} ({error}); extract it with "
            "`dpkg-deb -x` and report the compression used."
        ) from error


def _ar_members(data: bytes, archive: Path) -> dict[str, bytes]:
    """Splits a System V ``ar`` archive into ``{name: bytes}``."""
    if not data.startswith(_AR_MAGIC):
        raise AssetError(f"{archive} is not an ar archive (.deb).")
    members: dict[str, bytes] = {}
    offset = len(_AR_MAGIC)
    while offset + _AR_HEADER_SIZE <= len(data):
        header = data[offset : offset + _AR_HEADER_SIZE]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii"))
        start = offset + _AR_HEADER_SIZE
        members[name] = data[start : start + size]
        offset = start + size + (size % 2)
    return members


def _read_matching(bundle: tarfile.TarFile, pattern: str) -> dict[str, bytes]:
    """Reads every regular file of an open tarball whose path matches."""
    found: dict[str, bytes] = {}
    for info in bundle:
        if info.isfile() and fnmatch.fnmatchcase(info.name, pattern):
            handle = bundle.extractfile(info)
            if handle is not None:
                found[info.name] = handle.read()
    return found


def _single(names: list[str], pattern: str, archive: Path) -> str:
    """Picks the single name matching ``pattern``, or explains what went wrong."""
    matches = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
    if len(matches) != 1:
        raise AssetError(
            f"expected exactly one member matching {pattern!r} in {archive}, "
            f"found {matches}."
        )
    return matches[0]
