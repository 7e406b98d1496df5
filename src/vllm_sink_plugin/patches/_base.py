# SPDX-License-Identifier: Apache-2.0
"""The one way runtime patches are installed: wrap, keep the original, once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

_ORIGINAL = "__sink_original__"


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
    return True


def original_of(func: Any) -> Any:
    """The callable a patch replaced (for tests and for un-patching)."""
    func = getattr(func, "__func__", None) or getattr(func, "func", None) or func
    return getattr(func, _ORIGINAL, None)
