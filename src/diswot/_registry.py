"""A tiny name -> object registry shared by spaces, proxies, models and distillers.

Modelled on timm's ``register_model``: adding a new entry is one decorated function in one file.
Lookups of unknown names raise :class:`~diswot.errors.DiswotError` listing the known names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from diswot.errors import DiswotError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps lower-case names to objects; ``kind`` names the registry in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; used bare (``reg.register("x", f)``) or as a decorator."""

        def _add(o: T) -> T:
            key = name.lower()
            if key in self._items:
                raise DiswotError(f"{self.kind} '{name}' is registered twice")
            self._items[key] = o
            return o

        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> T:
        key = name.lower()
        if key not in self._items:
            raise DiswotError(
                f"unknown {self.kind} '{name}'; known: {', '.join(sorted(self._items))}"
            )
        return self._items[key]

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern.lower()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
