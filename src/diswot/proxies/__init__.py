"""Zero-cost proxies: one registry, one signature.

A proxy is a function ``fn(probe: StudentProbe) -> float`` registered with
:func:`~diswot.proxies.registry.register_proxy`, which records whether higher is better and what
the proxy needs (a teacher, labels, gradients). The :class:`~diswot.scoring.StudentProbe` it
receives lazily provides the initialised student, its cached forward pass (logits, pre-pool
features, closed-form classifier gradient), the teacher cache and the probe batch, so proxies that
share a forward pass share its cost. Adding a proxy is one decorated function in one file of this
package: import ``register_proxy`` from :mod:`diswot.proxies.registry` (not from this package,
which imports the file) and name the module in ``_BUILTIN_MODULES`` below.

Scores are reported in the proxy's own orientation; rankings use ``sign`` so that larger is always
better after ``value * spec.sign``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import numpy as np

from diswot.errors import DiswotError
from diswot.proxies.registry import (
    PROXIES,
    ProxyFn,
    ProxySpec,
    get_proxy,
    list_proxies,
    register_proxy,
)


def resolve_proxies(
    spec: str | list[str] | tuple[str, ...],
    *,
    has_teacher: bool = True,
    has_batchnorm: bool = True,
    space: str = "",
) -> list[str]:
    """Turn ``"all"``, ``"a,b"`` or a list into validated proxy names (teacher-needing ones checked).

    ``default`` names :data:`~diswot.proxies.composite.DEFAULT_PROXY`. ``all`` leaves out the
    composites (each is ranked against a reference sample scored for it; name them to get them).
    For a space without BatchNorm (``has_batchnorm=False``; ``space`` names it in messages), ``all``
    skips the proxies that need BN statistics with a one-line note on stderr, and naming one of them
    is an error.
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [resolve_alias(n.strip().lower()) for n in names if n.strip()]
    where = f"space '{space}'" if space else "this space"
    if names == ["all"]:
        names = [n for n in list_proxies() if has_teacher or not PROXIES.get(n).needs_teacher]
        names = [n for n in names if not PROXIES.get(n).needs_space]  # composites: named only
        skipped = [n for n in names if not has_batchnorm and PROXIES.get(n).needs_batchnorm]
        if skipped:
            names = [n for n in names if n not in skipped]
            print(
                f"diswot: note: skipping {', '.join(skipped)} (built on BatchNorm statistics; "
                f"{where} has no BatchNorm)",
                file=sys.stderr,
            )
    if not names:
        raise DiswotError(f"no proxy given; known: {', '.join(list_proxies())}")
    for n in names:
        p = get_proxy(n)
        if p.needs_teacher and not has_teacher:
            raise DiswotError(f"proxy '{n}' needs a teacher; pass --teacher NAME")
        if p.needs_batchnorm and not has_batchnorm:
            raise DiswotError(
                f"proxy '{n}' is built on BatchNorm statistics and {where} has no BatchNorm; "
                f"drop '{n}' from --proxy (--proxy all skips it)"
            )
    return list(dict.fromkeys(names))


def ensemble_members(name: str) -> list[str] | None:
    """The member proxies of an ensemble name ``"a+b+..."`` (validated), or ``None`` for a plain name.

    An ensemble is not a registered proxy: its value for one architecture is its mean rank *within
    the ranked set*, so it only exists once a whole set has been scored (see :func:`rank_average`).
    """
    if "+" not in name:
        return None
    members = [resolve_alias(m.strip().lower()) for m in name.split("+")]
    if len(members) < 2 or not all(members):
        raise DiswotError(
            f"ensemble '{name}' needs two or more proxy names joined by '+', e.g. diswot+params"
        )
    if len(set(members)) != len(members):
        raise DiswotError(f"ensemble '{name}' lists a proxy twice; name each member once")
    for m in members:
        get_proxy(m)
    return members


def rank_average(columns: dict[str, Sequence[float]]) -> list[float]:
    """Rank-average ensemble of proxy columns (one value per architecture, same order in each).

    Each member is oriented by its ``sign`` (larger = better) and converted to ranks 1..n (average
    ranks for ties; non-finite values share the lowest rank, so a member that fails on an
    architecture votes it last); the ensemble value is the mean rank, larger = better. Ranks make
    members with wildly different scales (parameter counts, log-determinants) count equally.
    """
    # Imported here: scipy.stats is slow to import, and only ensembles need it, not every command
    # and worker.
    from scipy.stats import rankdata

    if not columns:
        raise DiswotError("an ensemble needs at least one member column")
    n = {len(v) for v in columns.values()}
    if len(n) != 1:
        raise DiswotError("ensemble member columns must have one value per architecture each")
    total = np.zeros(n.pop(), dtype=np.float64)
    for name, values in columns.items():
        v = np.asarray(values, dtype=np.float64) * get_proxy(name).sign
        v = np.where(np.isfinite(v), v, -np.inf)
        total += rankdata(v, method="average")
    return (total / len(columns)).tolist()


_BUILTIN_MODULES = (
    "diswot.proxies.basic",
    "diswot.proxies.gradient",
    "diswot.proxies.jacobian",
    "diswot.proxies.activation",
    "diswot.proxies.weight",
    "diswot.proxies.distill",
    "diswot.proxies.diswotx",
    "diswot.proxies.aznas",
    "diswot.proxies.vkdnw",
    "diswot.proxies.meco",
    "diswot.proxies.swap",
    "diswot.proxies.zico",
    "diswot.proxies.composite",  # last: composites name the proxies above as terms
)
for _m in _BUILTIN_MODULES:
    importlib.import_module(_m)

from diswot.proxies.composite import resolve_alias  # noqa: E402  (registers after the terms)

__all__ = [
    "PROXIES",
    "ProxyFn",
    "ProxySpec",
    "ensemble_members",
    "get_proxy",
    "list_proxies",
    "rank_average",
    "register_proxy",
    "resolve_proxies",
]
