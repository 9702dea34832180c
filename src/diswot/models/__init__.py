"""Model zoo: one registry, one ``create_model`` entry point, and weight-init schemes.

Every network the search and distillation code touches (teachers, S1 students, NB201 cells, ...)
is built through :func:`create_model`, so a student named in a search result can be rebuilt
anywhere from its name alone. Adding a family is one decorated factory in a new module of this
package: ``@register_model("name") def f(num_classes: int = 100, **kw) -> nn.Module``, with
``register_model`` imported from :mod:`diswot.models._registry` (not from this package, which
imports the family's module). Modules of this package are imported automatically (see the bottom
of this file), so no other file changes.
"""

from __future__ import annotations

import importlib
import pkgutil

from diswot.models._create import create_model, is_model_name
from diswot.models._registry import MODELS, ModelFactory, register_model
from diswot.models.init import INIT_SCHEMES, init_weights, reinit_covers

__all__ = [
    "INIT_SCHEMES",
    "MODELS",
    "ModelFactory",
    "create_model",
    "init_weights",
    "is_model_name",
    "register_model",
    "reinit_covers",
]


def _import_submodules() -> None:
    # Each model family registers itself on import; importing every public module of the package
    # means a new family needs no edit here. Errors propagate: a broken model file should be loud.
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_submodules()
