"""Search spaces: one registry, one protocol (:class:`~diswot.spaces.base.SearchSpace`).

A space is a class registered with :func:`register_space`; :func:`get_space` instantiates it (the
instance without keyword arguments is shared, so its cost cache is too). Adding a space to the package
is one file in this package that registers a subclass, plus its module name in ``_BUILTIN_MODULES``
below. A user's own space needs no file here: ``get_space("path/to/file.py:NAME")`` (or
``package.module:NAME``, and ``--space`` likewise) imports it, see ``docs/custom_space.md``. Import
errors of a built-in space propagate: a broken space file should be loud, not silently missing from
``--space``.

The registry lives in :mod:`diswot.spaces.registry` and the protocol in :mod:`diswot.spaces.base`,
which the space modules import, so none of them imports this package back.
"""

from __future__ import annotations

import importlib

from diswot.spaces.base import DatasetSpec, SearchSpace
from diswot.spaces.registry import SPACES, get_space, list_spaces, register_space

__all__ = [
    "SPACES",
    "DatasetSpec",
    "SearchSpace",
    "get_space",
    "list_spaces",
    "register_space",
]

_BUILTIN_MODULES: tuple[str, ...] = (
    "diswot.spaces.s1",
    "diswot.spaces.nb201",
    "diswot.spaces.resnet_imagenet",
    "diswot.spaces.vit",
)
for _m in _BUILTIN_MODULES:
    importlib.import_module(_m)
