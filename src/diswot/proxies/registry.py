"""The proxy registry: what a proxy is (:class:`ProxySpec`) and how one is registered.

In a module of its own so that proxy modules register themselves without importing the package's
``__init__``, which imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from diswot._registry import Registry

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe

ProxyFn = Callable[["StudentProbe"], float]


@dataclass(frozen=True)
class ProxySpec:
    """A registered proxy and what it needs."""

    name: str
    fn: ProxyFn
    higher_is_better: bool = True
    needs_teacher: bool = False
    needs_labels: bool = False
    needs_grad: bool = False
    #: Built on BatchNorm statistics (zen's BN-variance rescaling): meaningless for a space whose
    #: networks have no BatchNorm (``SearchSpace.has_batchnorm = False``, the ViTs).
    needs_batchnorm: bool = False
    #: Ranks its terms against a reference sample of a search space (a composite,
    #: :mod:`diswot.proxies.composite`): it needs the scorer's space, and ``all`` leaves it out.
    needs_space: bool = False
    doc: str = ""

    @property
    def sign(self) -> float:
        """Multiply a value by this to get 'larger is better'."""
        return 1.0 if self.higher_is_better else -1.0


PROXIES: Registry[ProxySpec] = Registry("proxy")


def register_proxy(
    name: str,
    *,
    higher_is_better: bool = True,
    needs_teacher: bool = False,
    needs_labels: bool = False,
    needs_grad: bool = False,
    needs_batchnorm: bool = False,
) -> Callable[[ProxyFn], ProxyFn]:
    """Decorator registering ``fn`` as proxy ``name``; its docstring's first line is the help text."""

    def deco(fn: ProxyFn) -> ProxyFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        PROXIES.register(
            name,
            ProxySpec(
                name=name,
                fn=fn,
                higher_is_better=higher_is_better,
                needs_teacher=needs_teacher,
                needs_labels=needs_labels,
                needs_grad=needs_grad,
                needs_batchnorm=needs_batchnorm,
                doc=doc[0] if doc else "",
            ),
        )
        return fn

    return deco


def get_proxy(name: str) -> ProxySpec:
    """Look up a proxy by name (case-insensitive); unknown names list the known ones."""
    return PROXIES.get(name)


def list_proxies() -> list[str]:
    """Every registered proxy name, sorted."""
    return PROXIES.names()


__all__ = ["PROXIES", "ProxyFn", "ProxySpec", "get_proxy", "list_proxies", "register_proxy"]
