# SPDX-License-Identifier: Apache-2.0
"""The one way runtime patches are installed: wrap, keep the original, once.

Every wrap is recorded, so that a plugin that cannot finish patching can put
vLLM back as it was (:func:`unwrap_all`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

_ORIGINAL = "__sink_original__"
_MISSING = object()
# (owner, name, what owner.__dict__ held before: _MISSING if inherited),
# oldest first.
_installed: list[tuple[Any, str, Any]] = []


def wrap_attribute(
    owner: Any,
    name: str,
    make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]],
    *,
    kind: str = "function",
) -> bool:
    """Replaces ``owner.name`` by ``make_wrapper(original)``, idempotently.

    Args:
        owner: the class or module holding the attribute.
        name: the attribute to wrap.
        make_wrapper: gets the original callable, returns its replacement.
        kind: ``"function"``, ``"staticmethod"``, ``"classmethod"`` or
            ``"cached_property"``: how the replacement is stored on
            ``owner`` (a cached_property's wrapper gets and returns its
            underlying function).

    Returns:
        True if installed now, False if it already was.
    """
    current = owner.__dict__.get(name) if isinstance(owner, type) else None
    raw = (
        getattr(current, "__func__", None)
        or getattr(current, "func", None)
        or getattr(owner, name)
    )
    if getattr(raw, _ORIGINAL, None) is not None:
        return False
    original = getattr(owner, name).__func__ if kind == "classmethod" else raw
    previous = vars(owner).get(name, _MISSING)
    wrapper = make_wrapper(original)
    setattr(wrapper, _ORIGINAL, original)
    if kind == "staticmethod":
        wrapper = staticmethod(wrapper)
    elif kind == "classmethod":
        wrapper = classmethod(wrapper)
    elif kind == "cached_property":
        wrapper = functools.cached_property(wrapper)
        wrapper.__set_name__(owner, name)
    setattr(owner, name, wrapper)
    _installed.append((owner, name, previous))
    return True


def installed() -> list[tuple[Any, str]]:
    """``(owner, name)`` of every attribute wrapped now, oldest first."""
    return [(owner, name) for owner, name, _ in _installed]


def unwrap_all() -> int:
    """Puts back every attribute :func:`wrap_attribute` replaced, newest first.

    A class attribute that was inherited is deleted again. Module attributes
    rebound by hand to a wrapper (``from x import f`` aliases) keep it; each
    wrapper delegates to its original unless the engine's policy is sink.

    Returns:
        The number of attributes restored.
    """
    count = 0
    while _installed:
        owner, name, previous = _installed.pop()
        if previous is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, previous)
        count += 1
    return count


def original_of(func: Any) -> Any:
    """The callable a patch replaced (for tests and for un-patching)."""
    func = getattr(func, "__func__", None) or getattr(func, "func", None) or func
    return getattr(func, _ORIGINAL, None)
