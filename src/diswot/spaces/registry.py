"""The space registry and :func:`get_space`, the one way a space name becomes a space.

Its own module (not the package ``__init__``) so the built-in space modules can register themselves
without importing the package that imports them. Besides registered names, :func:`get_space` takes a
spec of a user's own space, ``path/to/file.py:NAME`` or ``package.module:NAME`` (see
:mod:`diswot.spaces.loader`); such a space is named by its spec, which is what run folders record, so
a resumed search, ``score --student result.json`` and the workers of a parallel search load it again
from the same spec.
"""

from __future__ import annotations

import copy
import copyreg
from collections.abc import Callable
from typing import Any, TypeVar

from diswot._registry import Registry
from diswot.errors import DiswotError
from diswot.spaces.base import SearchSpace, missing_methods
from diswot.spaces.loader import MISSING, is_spec, load_attribute

__all__ = ["SPACES", "get_space", "list_spaces", "register_space"]

S = TypeVar("S", bound=type[SearchSpace])

#: name -> :class:`SearchSpace` subclass.
SPACES: Registry[type[SearchSpace]] = Registry("space")

# name or spec (lower-case name, spec as given) -> the instance made without keyword arguments,
# shared so its cost cache is too.
_SHARED: dict[str, SearchSpace] = {}


def register_space(name: str) -> Callable[[S], S]:
    """Class decorator registering a :class:`SearchSpace` subclass under ``name``."""

    def deco(cls: S) -> S:
        if is_spec(name):
            raise DiswotError(f"space name {name!r} may not hold ':' (it marks a FILE:NAME spec)")
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
    """The space ``name``: a registered name (case-insensitive; unknown names list the known ones)
    or a ``path/to/file.py:NAME`` / ``package.module:NAME`` spec of a user's space.

    A :class:`SearchSpace` instance is returned as is, so APIs accept either. ``kw`` are passed to
    the space's class and give a new instance; without them the instance is shared.
    """
    if isinstance(name, SearchSpace):
        return name
    if not isinstance(name, str):
        raise DiswotError(f"space must be a name; known: {', '.join(SPACES.names())}")
    if is_spec(name):
        return _from_spec(name.strip(), kw)
    cls = SPACES.get(name)
    if kw:
        return cls(**kw)
    key = name.lower()
    if key not in _SHARED:
        _SHARED[key] = cls()
    return _SHARED[key]


def list_spaces() -> list[str]:
    """The registered names (specs of user spaces are not listed: they are not registered)."""
    return SPACES.names()


def _from_spec(spec: str, kw: dict[str, Any]) -> SearchSpace:
    if not kw and spec in _SHARED:
        return _SHARED[spec]
    value, where, attr = load_attribute(spec)
    if value is MISSING:
        if attr not in SPACES:
            found = _space_classes(where)
            hint = f"; it defines {', '.join(found)}" if found else ""
            raise DiswotError(f"{where} has no attribute {attr!r} (--space {spec}){hint}")
        value = SPACES.get(attr)  # a name the file registered with @register_space
    space = _instantiate(value, spec, kw)
    space.name = spec  # what run folders record, so the space can be loaded again from it
    copyreg.pickle(type(space), _reduce)
    if not kw:
        _SHARED[spec] = space
    return space


def _instantiate(value: object, spec: str, kw: dict[str, Any]) -> SearchSpace:
    """An instance of the spec's value: a class is instantiated, an instance copied (the user's
    object keeps its own name)."""
    if isinstance(value, type) and issubclass(value, SearchSpace):
        missing = missing_methods(value)
        if missing:
            raise DiswotError(
                f"space class {value.__name__} (--space {spec}) does not implement "
                f"{', '.join(missing)}"
            )
        try:
            return value(**kw)
        except Exception as exc:  # noqa: BLE001 - the user's constructor: any failure is theirs
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise DiswotError(
                f"space class {value.__name__} (--space {spec}) cannot be made: "
                f"{type(exc).__name__}: {first}"
            ) from exc
    if isinstance(value, SearchSpace):
        if kw:
            raise DiswotError(f"--space {spec} is an instance; options cannot be passed to it")
        return copy.copy(value)
    what = value.__name__ if isinstance(value, type) else f"a {type(value).__name__}"
    missing = missing_methods(value)
    lacks = f"it lacks {', '.join(missing)}" if missing else "it has the methods but not the base"
    raise DiswotError(
        f"--space {spec} is {what}, not a SearchSpace ({lacks}); derive the class from "
        "diswot.spaces.SearchSpace"
    )


def _space_classes(where: str) -> list[str]:
    """Names of the SearchSpace subclasses the spec's module holds (for the missing-name hint)."""
    names, _, _ = load_attribute(f"{where}:__dict__")  # the module is imported already: cached
    if not isinstance(names, dict):
        return []
    return sorted(
        k
        for k, v in names.items()
        if isinstance(v, type) and issubclass(v, SearchSpace) and v is not SearchSpace
    )


def _reduce(space: SearchSpace) -> Any:
    """Pickle a spec-loaded space as "load it again from its spec": a file-loaded class has no
    importable module for pickle to find in a worker process."""
    if _SHARED.get(space.name) is space:
        return get_space, (space.name,)
    return object.__reduce_ex__(space, 2)
