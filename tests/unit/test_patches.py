# SPDX-License-Identifier: Apache-2.0
"""Every runtime patch is listed, documented with the schema, and idempotent;
patches/README.md's index is the one rendered from the docstrings and SYMBOLS."""

import importlib
import pkgutil

import pytest

from vllm_sink_plugin import compat, patches
from vllm_sink_plugin.patches import index
from vllm_sink_plugin.patches._base import original_of

SCHEMA = (
    "Target:",
    "Process:",
    "vLLM:",
    "Why:",
    "How:",
    "Upstream:",
    "Remove when:",
    "Tests:",
)


def _patch_modules_on_disk():
    found = []
    for process in ("common", "frontend", "engine", "worker"):
        package = importlib.import_module(f"vllm_sink_plugin.patches.{process}")
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("patch_"):
                found.append(f"{process}.{info.name}")
    return sorted(found)


def test_every_patch_file_is_listed():
    assert _patch_modules_on_disk() == sorted(patches.all_patch_modules())


@pytest.mark.parametrize("name", patches.all_patch_modules())
def test_docstring_schema(name):
    doc = importlib.import_module(f"vllm_sink_plugin.patches.{name}").__doc__
    for field in SCHEMA:
        assert field in doc, f"{name} lacks {field}"


def test_patches_readme_index_is_rendered_from_the_docstrings():
    text = index.README.read_text(encoding="utf-8")
    for name, block in index.render().items():
        assert index.readme_block(text, name) == block, (
            f"patches/README.md block {name!r} is stale: run `{index.COMMAND}`"
        )


def test_patch_index_covers_every_patch_file_and_symbol():
    docs = index.patch_docs()
    files = [doc.file for doc in docs]
    assert files == sorted(files)
    assert [f.replace("/", ".")[: -len(".py")] for f in files] == (
        _patch_modules_on_disk()
    )
    for doc in docs:
        assert tuple(doc.fields) == index.FIELDS and all(doc.fields.values())
    table = index.render_patches(docs)
    assert all(f"[`{file}`]" in table for file in files)
    rows = [
        line
        for line in index.render_symbols().splitlines()
        if line.startswith("| `vllm.")
    ]
    assert [row.split("`")[1] for row in rows] == [s.path for s in compat.SYMBOLS]


def test_patch_docstring_fields_are_parsed():
    doc = index.parse_docstring(
        """Summary line.

Target:      vllm.a.B.{c, d}
             and vllm.long.module
             .Cls.meth
Process:     worker
vLLM:        0.32.0
Why:         one | two
             *three*
How:         h
Upstream:    u
Remove when: never.
Tests:       t
"""
    )
    assert doc.summary == "Summary line."
    assert doc.fields["Target"] == "vllm.a.B.{c, d} and vllm.long.module.Cls.meth"
    assert doc.fields["Remove when"] == "never."
    assert index._cell(doc.fields["Why"]) == r"one \| two \*three\*"
    cell = index._cell("``x|y`` and vllm.a.B.{c, d}.")
    assert cell == r"`x\|y` and `vllm.a.B.{c, d}`."
    with pytest.raises(ValueError, match="f.py: the docstring lacks Process:"):
        index.parse_docstring("S.\n\nTarget: x\n", "f.py")


def test_patch_index_check_and_write(tmp_path, capsys):
    readme = tmp_path / "README.md"
    fresh = index.update(index.README.read_text(encoding="utf-8"))
    stale = fresh.replace(index.render_patches(), index.render_patches([]))
    assert stale != fresh
    readme.write_text(stale, encoding="utf-8")
    assert index.main(["--check"], readme) == 1
    assert index.COMMAND in capsys.readouterr().err
    assert index.main(["--write"], readme) == 0
    assert readme.read_text(encoding="utf-8") == fresh
    assert index.main(["--check"], readme) == 0


def test_apply_twice_is_a_noop():
    from vllm.engine.arg_utils import EngineArgs

    patches.apply_patches()
    first = EngineArgs.__dict__["create_engine_config"]
    patches.apply_patches()
    assert EngineArgs.__dict__["create_engine_config"] is first
    original = original_of(first)
    assert original is not None and original_of(original) is None


def test_scheduler_stats_carry_sink_stats_between_processes():
    from vllm.v1.engine import EngineCoreOutputs
    from vllm.v1.metrics.stats import SchedulerStats
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    patches.apply_patches()
    stats = SchedulerStats(num_running_reqs=2)
    assert stats.sink_stats is None
    stats.sink_stats = {"running": 2, "cache_blocks": [3, 4], "evicted_blocks": 9}
    wire = MsgpackEncoder().encode(EngineCoreOutputs(scheduler_stats=stats))
    got = MsgpackDecoder(EngineCoreOutputs).decode(wire).scheduler_stats
    assert got.sink_stats == stats.sink_stats and got.num_running_reqs == 2
    stock = MsgpackEncoder().encode(EngineCoreOutputs(scheduler_stats=SchedulerStats()))
    assert (
        MsgpackDecoder(EngineCoreOutputs).decode(stock).scheduler_stats.sink_stats
        is None
    )
