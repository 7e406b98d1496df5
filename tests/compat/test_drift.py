# SPDX-License-Identifier: Apache-2.0
"""Drift canaries: what the plugin relies on still holds in the installed vLLM.

The list is ``vllm_sink_plugin.compat.SYMBOLS``; each entry is one test, so a
vLLM upgrade that moves, renames or re-signs a symbol fails by name.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from vllm_sink_plugin import compat
from vllm_sink_plugin.compat import SYMBOLS, VllmSymbol, check_symbol

SCHED = "vllm.v1.core.sched.scheduler.Scheduler"


def test_the_installed_vllm_is_supported():
    assert compat.is_supported(), (
        f"vLLM {compat.installed_version()} is not in {compat.SUPPORTED_VLLM}"
    )


def test_symbol_paths_are_unique():
    paths = [s.path for s in SYMBOLS]
    assert len(paths) == len(set(paths))


@pytest.mark.parametrize("symbol", SYMBOLS, ids=[s.path for s in SYMBOLS])
def test_symbol_still_matches(symbol):
    problems = check_symbol(symbol)
    assert not problems, "\n".join(problems)


def _listed(owner, name, roles):
    """The SYMBOLS entry naming ``owner.name`` with one of ``roles``, if any."""
    for symbol in SYMBOLS:
        if symbol.role not in roles or symbol.name != name:
            continue
        parent = symbol.path.rsplit(".", 1)[0]
        if compat.resolve(parent) is owner:
            return symbol
    return None


def test_every_patched_attribute_is_listed():
    from vllm_sink_plugin.patches import _base, apply_patches

    apply_patches()
    wrapped = _base.installed()
    assert wrapped
    unlisted = [
        f"{getattr(owner, '__qualname__', owner.__name__)}.{name}"
        for owner, name in wrapped
        if _listed(owner, name, ("patched",)) is None
    ]
    assert not unlisted, f"patched but not in compat.SYMBOLS: {unlisted}"


@pytest.mark.parametrize(
    ("plugin_class", "base_path"),
    [
        ("vllm_sink_plugin.core.scheduler.StreamingSinkScheduler", SCHED),
        (
            "vllm_sink_plugin.core.scheduler.StreamingSinkAsyncScheduler",
            "vllm.v1.core.sched.async_scheduler.AsyncScheduler",
        ),
        (
            "vllm_sink_plugin.attention.cpu_backend.StreamingSinkCpuImpl",
            "vllm.v1.attention.backends.cpu_attn.CPUAttentionBackendImpl",
        ),
        (
            "vllm_sink_plugin.attention.cpu_backend.StreamingSinkCpuBackend",
            "vllm.v1.attention.backends.cpu_attn.CPUAttentionBackend",
        ),
        (
            "vllm_sink_plugin.metrics.SinkPrometheusStatLogger",
            "vllm.v1.metrics.loggers.PrometheusStatLogger",
        ),
    ],
)
def test_every_overridden_hook_is_listed(plugin_class, base_path):
    """Each vLLM method a plugin subclass overrides has a canary."""
    module, name = plugin_class.rsplit(".", 1)
    cls = getattr(__import__(module, fromlist=[name]), name)
    base = compat.resolve(base_path)
    overridden = [
        attr
        for attr, value in vars(cls).items()
        if callable(getattr(value, "__func__", value))
        and not attr.startswith("__")
        or attr == "__init__"
    ]
    missing = []
    for attr in overridden:
        owner = next((k for k in base.__mro__ if attr in vars(k)), None)
        if owner is None:
            continue  # the plugin's own method
        if _listed(owner, attr, ("overridden", "subclassed")) is None:
            missing.append(f"{owner.__qualname__}.{attr}")
    assert not missing, f"{cls.__name__} overrides unlisted hooks: {missing}"


def _from_imports_of(name: str, source_module: str) -> set[str]:
    """vLLM modules that ``from <source_module> import <name>``."""
    import vllm

    root = Path(vllm.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8", errors="replace")
        if name not in text or source_module not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == source_module
                and any(alias.name == name for alias in node.names)
            ):
                relative = path.relative_to(root.parent).with_suffix("")
                found.add(".".join(relative.parts))
    return found


def test_every_alias_of_get_max_tokens_is_rebound():
    """A new ``from api_utils import get_max_tokens`` would bypass the patch."""
    from vllm_sink_plugin.patches.frontend import patch_api_max_tokens as patch

    found = _from_imports_of("get_max_tokens", patch.SOURCE_MODULE)
    assert found == set(patch.ALIAS_MODULES)


# -- the canary itself catches drift ------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "needle"),
    [
        (VllmSymbol(path=f"{SCHED}._no_such_hook", why="t"), "missing"),
        (VllmSymbol(path="vllm.v1.no_such_module.X", why="t"), "missing"),
        (
            VllmSymbol(
                path=f"{SCHED}._preempt_request", params=("self", "req"), why="t"
            ),
            "the plugin binds ['self', 'req']",
        ),
        (
            VllmSymbol(path=f"{SCHED}._free_request", kind="staticmethod", why="t"),
            "expected staticmethod",
        ),
        (
            VllmSymbol(path=SCHED, kind="class", attrs=("no_such_attr",), why="t"),
            "lacks attributes ['no_such_attr']",
        ),
        (
            VllmSymbol(
                path=f"{SCHED}._preempt_request",
                called_by=(f"{SCHED}.add_request",),
                why="t",
            ),
            f"no longer called by {SCHED}.add_request",
        ),
        (
            VllmSymbol(
                path=f"{SCHED}._free_request", uses=("self.no_such_attr",), why="t"
            ),
            "no longer reads",
        ),
        (
            VllmSymbol(
                path=f"{SCHED}.add_request",
                inherited_by=("vllm.v1.core.sched.async_scheduler.AsyncScheduler",),
                why="t",
            ),
            None,
        ),
        (
            VllmSymbol(
                path=f"{SCHED}._update_after_schedule",
                inherited_by=("vllm.v1.core.sched.async_scheduler.AsyncScheduler",),
                why="t",
            ),
            "overridden by",
        ),
    ],
)
def test_the_canary_catches_drift(symbol, needle):
    problems = check_symbol(symbol)
    if needle is None:
        assert not problems
    else:
        assert any(needle in p for p in problems), problems


def test_a_hook_named_only_in_a_comment_is_not_called():
    def caller(self):
        # self._preempt_request(request) used to be here
        return "self._preempt_request(request)"

    text = compat._code(inspect.getsource(caller), strings=False)
    assert "_preempt_request" not in text


def test_bad_roles_and_kinds_are_refused():
    with pytest.raises(ValueError, match="role"):
        VllmSymbol(path="vllm.x", why="t", role="wrapped")
    with pytest.raises(ValueError, match="kind"):
        VllmSymbol(path="vllm.x", why="t", kind="method")


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("0.32.0", True),
        ("0.32.0+cpu", True),
        ("0.33.0+cu129", True),
        ("0.33.1", False),
        ("0.33.0rc1", False),
        ("0.31.0", False),
        ("0.34.0", False),
    ],
)
def test_is_supported(version, supported):
    assert compat.is_supported(version) is supported


def test_untested_allowed():
    assert compat.untested_allowed({compat.ALLOW_ENV: "1"})
    assert not compat.untested_allowed({compat.ALLOW_ENV: "0"})
    assert not compat.untested_allowed({})
