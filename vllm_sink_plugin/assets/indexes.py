# SPDX-License-Identifier: Apache-2.0
"""Downloading a pinned file from pip's package indexes without running any of it.

``pip download`` prepares an sdist's metadata once it has it, which runs the
sdist's build backend (``setup.py``) and, with build isolation, build
requirements that pip fetches without checking any hash. Here a file is instead
looked up by its exact name on the project pages (PEP 503 HTML or PEP 691 JSON)
of the indexes pip is configured with, streamed into a hidden temporary file,
and given its real name only once its sha256 matches the pin. Nothing in it runs.

pip's settings come from ``pip config list``: ``index-url`` (PyPI by default),
``extra-index-url``, ``find-links``, ``no-index``, ``cert``, ``proxy`` and
``timeout``, from ``PIP_*`` variables first, then the ``[download]`` and
``[global]`` sections. Every configured location is searched, strongest first;
the pinned sha256 makes any of them safe to take the file from.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import http.client
import json
import os
import posixpath
import re
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from vllm_sink_plugin.assets.errors import AssetError, HashMismatchError

PYPI_SIMPLE = "https://pypi.org/simple/"
# Strongest first, as ``pip download`` reads them.
PIP_SECTIONS = (":env:", "download", "global")
_JSON_PAGE = "application/vnd.pypi.simple.v1+json"
_ACCEPT = f"{_JSON_PAGE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
_USER_AGENT = "vllm-sink-plugin-assets"
_DEFAULT_TIMEOUT = 15.0
_CHUNK = 1 << 20
_REMOTE = frozenset({"http", "https"})
_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
# Errors that mean "this location did not work", as opposed to a wrong file.
_UNREACHABLE = (OSError, ValueError, KeyError, TypeError, http.client.HTTPException)


@dataclass(frozen=True)
class PipSettings:
    """Where ``pip download`` would look for files and how it would connect.

    Attributes:
        indexes: Simple-API root URLs, in search order.
        find_links: Folders, or pages of links, searched before the indexes.
        cert: CA bundle replacing the system's for HTTPS, or None.
        proxy: Proxy URL for HTTP(S), or None for the ``*_proxy`` variables.
        timeout: Socket timeout in seconds.
    """

    indexes: tuple[str, ...] = (PYPI_SIMPLE,)
    find_links: tuple[str, ...] = ()
    cert: str | None = None
    proxy: str | None = None
    timeout: float = _DEFAULT_TIMEOUT


def pip_settings() -> PipSettings:
    """Reads pip's configuration with this interpreter's ``pip config list``.

    Raises:
        AssetError: pip could not be run or failed.
    """
    command = [sys.executable, "-m", "pip", "config", "list"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise AssetError(f"cannot run `{' '.join(command)}` ({error}).") from error
    if result.returncode != 0:
        raise AssetError(
            f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
            f"{result.stderr.strip()}"
        )
    return parse_pip_config(result.stdout)


def parse_pip_config(listing: str) -> PipSettings:
    """Turns ``pip config list`` output into settings.

    Each line reads ``section.option='value'``; options outside
    ``PIP_SECTIONS`` are ignored. A single-valued option takes its value from
    the strongest section setting it; every ``index-url`` and
    ``extra-index-url`` value is kept, strongest first.

    Args:
        listing: The command's standard output.
    """
    found: dict[str, list[tuple[int, str]]] = {}
    for line in listing.splitlines():
        key, equals, raw = line.partition("=")
        section, dot, option = key.strip().partition(".")
        if not (equals and dot) or section not in PIP_SECTIONS:
            continue
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            continue
        rank = PIP_SECTIONS.index(section)
        found.setdefault(option.lower().replace("_", "-"), []).append(
            (rank, str(value))
        )

    def ranked(*options: str) -> list[str]:
        pairs = [pair for option in options for pair in found.get(option, [])]
        return [value for _, value in sorted(pairs, key=lambda pair: pair[0])]

    def words(*options: str) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(w for value in ranked(*options) for w in value.split())
        )

    def first(*options: str) -> str | None:
        values = ranked(*options)
        return values[0] if values else None

    indexes = words("index-url") or (PYPI_SIMPLE,)
    if (first("no-index") or "").lower() in _TRUE:
        indexes = ()
    else:
        indexes = tuple(dict.fromkeys(indexes + words("extra-index-url")))
    try:
        timeout = float(first("timeout", "default-timeout") or _DEFAULT_TIMEOUT)
    except ValueError:
        timeout = _DEFAULT_TIMEOUT
    return PipSettings(
        indexes=indexes,
        find_links=words("find-links"),
        cert=first("cert"),
        proxy=first("proxy"),
        timeout=timeout,
    )


def project_page(index: str, project: str) -> str:
    """Returns the URL of a project's page on a simple-API index (PEP 503)."""
    name = re.sub(r"[-_.]+", "-", project).lower()
    return f"{index.rstrip('/')}/{name}/"


def download_pinned(
    project: str,
    filename: str,
    sha256: str,
    dest: Path,
    hint: str = "",
    settings: PipSettings | None = None,
) -> Path:
    """Downloads ``filename`` from pip's indexes into ``dest``, verified.

    The bytes go to a hidden temporary file in ``dest``, which is renamed to
    ``filename`` only if its sha256 is ``sha256``, and deleted otherwise.

    Args:
        project: The PyPI project listing the file.
        filename: The exact file name to look for.
        sha256: The pinned sha256 (hex).
        dest: The folder to put the file in.
        hint: Added to a hash mismatch's message.
        settings: pip's settings; read with ``pip config list`` when None.

    Returns:
        The verified file, ``dest / filename``.

    Raises:
        HashMismatchError: A location served other bytes; nothing is kept.
        AssetError: No location lists the file or could deliver it; the message
            says what happened at each one.
    """
    settings = settings or pip_settings()
    try:
        opener = _opener(settings)
    except (OSError, ValueError) as error:
        raise AssetError(
            f"cannot set up HTTPS with pip's settings ({error})."
        ) from error
    misses = []
    locations = [(link, True) for link in settings.find_links]
    locations += [(project_page(index, project), False) for index in settings.indexes]
    for location, is_find_links in locations:
        try:
            links = _links(opener, location, is_find_links, settings.timeout)
            if filename not in links:
                misses.append(f"{_redact(location)}: not listed")
                continue
            return _download(
                opener, links[filename], dest / filename, sha256, settings, hint
            )
        except _UNREACHABLE as error:
            misses.append(f"{_redact(location)}: {error}")
    raise AssetError(
        f"no package index of pip's delivered {filename}:\n  "
        + ("\n  ".join(misses) or "(pip is configured with no index)")
    )


def _opener(settings: PipSettings) -> urllib.request.OpenerDirector:
    """Builds a URL opener using pip's CA bundle and proxy, if it has them."""
    handlers: list[urllib.request.BaseHandler] = []
    if settings.proxy:
        proxies = {"http": settings.proxy, "https": settings.proxy}
        handlers.append(urllib.request.ProxyHandler(proxies))
    if settings.cert:
        context = ssl.create_default_context(cafile=settings.cert)
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    opener.addheaders = [("User-Agent", _USER_AGENT)]
    return opener


def _links(
    opener: urllib.request.OpenerDirector,
    location: str,
    is_find_links: bool,
    timeout: float,
) -> dict[str, str]:
    """Returns ``{file name: URL}`` for the files a location offers.

    A local folder lists its files when it is a ``find-links`` entry, and
    stands for its ``index.html`` when it is an index page, as in pip.
    """
    folder = _local_path(location)
    if folder is not None and folder.is_dir():
        if is_find_links:
            return {p.name: p.as_uri() for p in folder.iterdir() if p.is_file()}
        location = (folder / "index.html").as_uri()
    elif folder is not None:
        location = folder.resolve().as_uri()
    request = urllib.request.Request(location, headers={"Accept": _ACCEPT})
    with opener.open(request, timeout=timeout) as response:
        body = response.read()
        page = response.geturl()
        is_json = response.headers.get_content_type() == _JSON_PAGE
    if is_json:
        pairs = [(f["filename"], f["url"]) for f in json.loads(body)["files"]]
    else:
        parser = _AnchorParser()
        parser.feed(body.decode("utf-8", "replace"))
        pairs = [("", href) for href in parser.hrefs]
    remote = urlsplit(page).scheme in _REMOTE
    links: dict[str, str] = {}
    for name, href in pairs:
        url = urljoin(page, href)
        if remote and urlsplit(url).scheme not in _REMOTE:
            continue  # a web page has no business pointing at local files
        links.setdefault(name or unquote(posixpath.basename(urlsplit(url).path)), url)
    return links


def _download(
    opener: urllib.request.OpenerDirector,
    url: str,
    target: Path,
    sha256: str,
    settings: PipSettings,
    hint: str,
) -> Path:
    """Streams ``url`` into a temporary file, renamed to ``target`` if verified."""
    digest = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent
    )
    try:
        with (
            os.fdopen(handle, "wb") as out,
            opener.open(url, timeout=settings.timeout) as response,
        ):
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != sha256:
            note = f"It came from {_redact(url)} and was deleted unused."
            raise HashMismatchError(target, sha256, actual, f"{note}\n{hint}".strip())
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return target


class _AnchorParser(HTMLParser):
    """Collects the ``href`` of every ``<a>`` tag of a page."""

    def __init__(self) -> None:
        """Starts with no links."""
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Records an anchor's target."""
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _local_path(location: str) -> Path | None:
    """Returns the local path a ``file:`` URL or bare path names, else None."""
    parts = urlsplit(location)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if not parts.scheme or len(parts.scheme) == 1:  # a path (or drive letter)
        return Path(location)
    return None


def _redact(url: str) -> str:
    """Hides the credentials a URL may carry, for error messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))
