"""Name -> class registries for sources and sinks: one dict and one decorator each.

A new source or sink is one new module with a decorator; the CLI choices, the runtime and the
shared contract tests all read these dicts (no if/elif over names anywhere).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

SOURCES: dict[str, type] = {}
SINKS: dict[str, type] = {}


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[type[T]], type[T]]:
    def decorate(cls: type[T]) -> type[T]:
        if name in table:
            raise ValueError(f"{kind} {name!r} registered twice ({table[name]} and {cls})")
        table[name] = cls
        cls.registry_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def register_source(name: str) -> Callable[[type[T]], type[T]]:
    return _register(SOURCES, "source", name)


def register_sink(name: str) -> Callable[[type[T]], type[T]]:
    return _register(SINKS, "sink", name)


def lookup(table: dict[str, type], name: str, kind: str) -> type:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(table)}") from None
