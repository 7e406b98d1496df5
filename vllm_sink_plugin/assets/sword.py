# SPDX-License-Identifier: Apache-2.0
"""Reading a SWORD ``zText`` Bible module into plain text, one verse per line.

A ``zText`` module stores each testament (``ot``, ``nt``) in three files:

* ``.bzs`` -- block index, 12-byte records ``<III``: offset into ``.bzz``,
  compressed size, uncompressed size.
* ``.bzz`` -- the zlib-compressed blocks, concatenated.
* ``.bzv`` -- verse index, 10-byte records ``<IIH``: block number, offset of
  the entry inside the uncompressed block, entry size.

Entries come in versification order: module and testament headings, then for
each book a book heading, and for each chapter a chapter heading followed by the
verses. Headings carry only markup and front matter, which the OSIS cleaner
drops, so keeping the non-empty cleaned entries yields the verses in order.
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from collections.abc import Iterator, Mapping

from vllm_sink_plugin.assets.errors import AssetError

BLOCK_RECORD = struct.Struct("<III")
VERSE_RECORD = struct.Struct("<IIH")
TESTAMENTS = ("ot", "nt")

# Elements whose content is not Bible text: footnotes and speaker labels.
_HIDDEN_ELEMENTS = frozenset({"note", "speaker"})
# Milestone divisions (sID ... eID) holding prefaces, introductions, glossaries.
_HIDDEN_DIVISIONS = frozenset({"front", "introduction", "glossary"})
# Greek-expanded Daniel and Esther repeat those books; the module crams them
# into a few huge entries because they do not fit its versification.
_HIDDEN_BOOKS = frozenset({"DanGr", "EsthGr"})
# Tags that separate words; all others (w, q, seg, name, ...) are inline.
_BLOCK_TAGS = frozenset(
    {"chapter", "div", "item", "l", "lb", "lg", "list", "milestone", "p", "title"}
)
_TAG = re.compile(r"(<[^>]*>)")
_TAG_NAME = re.compile(r"<(/?)([\w:]+)")
# Stands for removed content until whitespace is normalised: it becomes a
# space between two word characters ("God<note/>created") and nothing elsewhere.
_GAP = "\x00"
_GAP_BETWEEN_WORDS = re.compile(rf"(?<=\w){_GAP}+(?=\w)")


def read_entries(bzs: bytes, bzv: bytes, bzz: bytes) -> Iterator[str]:
    """Yields every entry of one testament, in index order, as raw markup.

    Args:
        bzs: Contents of the ``.bzs`` block index.
        bzv: Contents of the ``.bzv`` verse index.
        bzz: Contents of the ``.bzz`` compressed blocks.

    Raises:
        AssetError: The index sizes or a block's length do not match the format.
    """
    for name, data, record in (("bzs", bzs, BLOCK_RECORD), ("bzv", bzv, VERSE_RECORD)):
        if len(data) % record.size:
            raise AssetError(
                f".{name} is {len(data)} bytes, not a multiple of its "
                f"{record.size}-byte record; not a zText module."
            )
    blocks = [_inflate(bzz, *record) for record in BLOCK_RECORD.iter_unpack(bzs)]
    for block, offset, size in VERSE_RECORD.iter_unpack(bzv):
        yield blocks[block][offset : offset + size].decode("utf-8") if size else ""


def bible_lines(files: Mapping[str, bytes]) -> Iterator[str]:
    """Yields the module's verses as plain text, Old Testament first.

    Args:
        files: The module's data files by base name (``ot.bzs``, ``nt.bzv``, ...).

    Raises:
        AssetError: A data file is missing or malformed.
    """
    for testament in TESTAMENTS:
        parts = [f"{testament}.{suffix}" for suffix in ("bzs", "bzv", "bzz")]
        missing = [part for part in parts if part not in files]
        if missing:
            raise AssetError(f"zText module lacks {missing} (has {sorted(files)}).")
        cleaner = OsisCleaner()
        for entry in read_entries(*(files[part] for part in parts)):
            line = cleaner.clean(entry)
            if line:
                yield line


class OsisCleaner:
    """Turns OSIS entries into plain text, carrying open spans across entries.

    Notes, speaker labels, non-canonical titles (headings), front matter,
    introductions, glossaries and the books in ``_HIDDEN_BOOKS`` are dropped;
    canonical titles (psalm superscriptions) and all verse text are kept.
    """

    def __init__(self) -> None:
        """Starts outside any hidden element or division."""
        self._hidden_depth = 0
        self._title_hides: list[bool] = []
        self._open_divisions: set[str] = set()
        self._book: str | None = None

    def clean(self, entry: str) -> str:
        """Returns the entry's visible text on one line, whitespace collapsed."""
        pieces = []
        for token in _TAG.split(entry):
            if token.startswith("<"):
                pieces.append(self._tag(token))
            elif not self._hiding():
                pieces.append(token)
        text = html.unescape("".join(pieces))
        text = _GAP_BETWEEN_WORDS.sub(" ", text).replace(_GAP, "")
        return " ".join(text.split())

    def _hiding(self) -> bool:
        """Tells whether text at the current position is dropped."""
        return bool(
            self._hidden_depth or self._open_divisions or self._book in _HIDDEN_BOOKS
        )

    def _tag(self, tag: str) -> str:
        """Updates the hiding state for one tag; returns what stands in for it."""
        match = _TAG_NAME.match(tag)
        if match is None:
            return ""
        closing, name = match.group(1) == "/", match.group(2)
        self_closing = tag.endswith("/>")
        if name in _HIDDEN_ELEMENTS and not self_closing:
            self._hidden_depth += -1 if closing else 1
            return _GAP
        if name == "title" and not self_closing:
            self._title(tag, closing)
        elif name == "div" and self_closing:
            self._division(tag)
        return " " if name in _BLOCK_TAGS else ""

    def _title(self, tag: str, closing: bool) -> None:
        """Hides headings; canonical titles (psalm superscriptions) stay."""
        if closing:
            if self._title_hides and self._title_hides.pop():
                self._hidden_depth -= 1
            return
        hides = _attribute(tag, "canonical") != "true"
        self._title_hides.append(hides)
        self._hidden_depth += hides

    def _division(self, tag: str) -> None:
        """Tracks the current book and the divisions whose content is hidden.

        Book ends are not tracked: the module misplaces some of them, and every
        book runs until the next one starts anyway.
        """
        start, end = _attribute(tag, "sID"), _attribute(tag, "eID")
        kind = _attribute(tag, "type")
        if start and kind == "book":
            self._book = _attribute(tag, "osisID")
        elif start and kind in _HIDDEN_DIVISIONS:
            self._open_divisions.add(start)
        elif end:
            self._open_divisions.discard(end)


def _attribute(tag: str, name: str) -> str | None:
    """Returns an attribute's value from a tag's source, or None."""
    match = re.search(rf'\b{name}="([^"]*)"', tag)
    return match.group(1) if match else None


def _inflate(bzz: bytes, offset: int, size: int, expected: int) -> bytes:
    """Decompresses one block and checks its announced length."""
    block = zlib.decompress(bzz[offset : offset + size])
    if len(block) != expected:
        raise AssetError(
            f"zText block at offset {offset} inflates to {len(block)} bytes, "
            f"the index says {expected}."
        )
    return block
