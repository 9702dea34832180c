"""Import a user's search space from a spec, ``path/to/file.py:NAME`` or ``package.module:NAME``.

The convention of ``uvicorn app:app``: the part before the last colon says where the code is, the part
after it which attribute to take (dotted attributes are followed). It lets a user search their own
space without writing into the package: ``diswot search --space my_space.py:MySpace``. This module
only imports and looks up; what the attribute must be (a :class:`~diswot.spaces.base.SearchSpace`
subclass, an instance, or a space name the import registered) is
:func:`diswot.spaces.registry.get_space`'s business.

Every failure is one line naming the spec: no such file, a file or module that does not import (the
exception's type, message and, for a file, the line), a missing attribute.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from diswot.errors import DiswotError

__all__ = ["MISSING", "is_spec", "load_attribute"]

#: What :func:`load_attribute` returns for an attribute the module lacks (``None`` is a value).
MISSING = object()


def is_spec(name: str) -> bool:
    """Whether ``name`` is a ``WHERE:NAME`` spec rather than a registered space name (which never
    holds a colon)."""
    return ":" in name


def _split(spec: str) -> tuple[str, str]:
    where, _, attr = spec.strip().rpartition(":")
    if not where or not attr:
        raise DiswotError(
            f"space spec {spec!r} needs the form path/to/file.py:NAME or package.module:NAME"
        )
    return where, attr


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _import_file(path: Path, spec: str) -> ModuleType:
    """Import ``path`` once per process under a name derived from its absolute path, so a second
    spec naming the same file (``./x.py:A``, ``x.py:B``) reuses the module instead of running its
    registrations twice."""
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise DiswotError(f"space file {path} {what} (--space {spec})")
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    name = f"_diswot_space_{resolved.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    found = importlib.util.spec_from_file_location(name, resolved)
    if found is None or found.loader is None:
        raise DiswotError(f"space file {path} cannot be imported as Python (--space {spec})")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module  # registered first: dataclasses and pickle look modules up by name
    try:
        found.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        lines = [
            f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(resolved)
        ]
        at = f" (line {lines[-1]})" if lines and not isinstance(exc, SyntaxError) else ""
        raise DiswotError(f"space file {path} does not import: {_first_line(exc)}{at}") from exc
    return module


def _import_module(where: str, spec: str) -> ModuleType:
    """Import a dotted module, the current folder searchable as ``uvicorn`` makes it (``python -m``
    puts it on ``sys.path``, the ``diswot`` script does not)."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (where == exc.name or where.startswith(exc.name + ".")):
            raise DiswotError(
                f"no module named {exc.name!r} (--space {spec}); give a module importable from "
                f"{cwd} or a file path such as path/to/file.py:NAME"
            ) from exc
        raise DiswotError(f"module {where} does not import: {_first_line(exc)}") from exc
    except (Exception, SystemExit) as exc:
        raise DiswotError(f"module {where} does not import: {_first_line(exc)}") from exc


def load_attribute(spec: str) -> tuple[object, str, str]:
    """``(value, where, attr)`` for ``spec``: the attribute ``attr`` of the file or module ``where``
    (:data:`MISSING` when the module has no such attribute)."""
    where, attr = _split(spec)
    if _is_file(where):
        module = _import_file(Path(where).expanduser(), spec)
    else:
        module = _import_module(where, spec)
    value: object = module
    for part in attr.split("."):
        value = getattr(value, part, MISSING)
        if value is MISSING:
            break
    return value, where, attr
