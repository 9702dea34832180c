"""Search spaces: one registry, one protocol (:class:`~diswot.spaces.base.SearchSpace`).

A space is a class registered with :func:`register_space`; :func:`get_space` instantiates it (the
instance without keyword arguments is shared, so its cost cache is too). Adding a space is one file in
this package that registers a subclass, plus its module name in ``_BUILTIN_MODULES`` below. Import
errors propagate: a broken space file should be loud, not silently missing from ``--space``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from diswot._registry import Registry
from diswot.errors import DiswotError
from diswot.spaces.base import DatasetSpec, SearchSpace

__all__ = [
    "SPACES",
    "DatasetSpec",
    "SearchSpace",
    "get_space",
    "list_spaces",
    "register_space",
]

S = TypeVar("S", bound=type[SearchSpace])

#: name -> :class:`SearchSpace` subclass.
SPACES: Registry[type[SearchSpace]] = Registry("space")

_SHARED: dict[str, SearchSpace] = {}


def register_space(name: str) -> Callable[[S], S]:
    """Class decorator registering a :class:`SearchSpace` subclass under ``name``."""

    def deco(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, SearchSpace)):
            raise DiswotError(f"space '{name}' must be a SearchSpace subclass")
        if cls.name and cls.name != name:
            raise DiswotError(
                f"space class {cls.__name__} says name={cls.name!r}, registered {name!r}"
            )
        cls.name = name
        SPACES.register(name, cls)
        return cls

    return deco


def get_space(name: str | SearchSpace, **kw: Any) -> SearchSpace:
    """The space ``name`` (case-insensitive); unknown names list the known ones.

    A :class:`SearchSpace` instance is returned as is, so APIs accept either.
    """
    if isinstance(name, SearchSpace):
        return name
    if not isinstance(name, str):
        raise DiswotError(f"space must be a name; known: {', '.join(SPACES.names())}")
    cls = SPACES.get(name)
    if kw:
        return cls(**kw)
    key = name.lower()
    if key not in _SHARED:
        _SHARED[key] = cls()
    return _SHARED[key]


def list_spaces() -> list[str]:
    return SPACES.names()


_BUILTIN_MODULES: tuple[str, ...] = (
    "diswot.spaces.s1",
    "diswot.spaces.nb201",
    "diswot.spaces.resnet_imagenet",
    "diswot.spaces.vit",
)
for _m in _BUILTIN_MODULES:
    importlib.import_module(_m)
