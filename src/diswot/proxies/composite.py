"""Composite proxies: published aggregates that score one network without a population.

AZ-NAS and VKDNW combine their terms as ``sum_t log(rank_t / N)`` within the ranked population
(:mod:`diswot.proxies.aggregate`), so a network's aggregate depends on what else was scored. A
search scores one candidate at a time, resumes, and spreads candidates over workers, so it needs a
value that does not. A composite here ranks each term against a fixed **reference sample** instead:
``size`` architectures drawn with ``seed`` by the space's own seeded sampling, scored once with the
terms and cached (:mod:`diswot.scoring.reference`). A network's value is

    ``sum_t log(p_t)``,  ``p_t = (below + 0.5 * equal + 0.5) / (size + 1)``

where ``below`` and ``equal`` count the reference values of term ``t`` under the same probe seed
that are smaller than, and equal to, the network's (every term oriented by its ``higher_is_better``
first). ``p_t`` is the mid-rank empirical CDF, smoothed so that it is never 0 or 1; a non-finite
term value (a failed or degenerate term) ranks lowest, tied with the reference's non-finite values.
Larger is better. Where the ranked networks are drawn as the reference is, ``p_t`` estimates a
network's ``rank_t / N`` in their population, so the two forms agree in expectation.

A composite is declared as data (:class:`Composite`: name, terms, reference size and seed) with
:func:`register_composite`, which registers it as an ordinary proxy, so ``score``, ``rank`` and
``search`` all compute it the same way: one candidate, one number.

:data:`DEFAULT_PROXY` is the rule ``--proxy default`` (score, rank) and ``--objective default``
(search, the Python API) resolve to: switching the default is a one-line change here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from diswot._registry import Registry
from diswot.errors import DiswotError
from diswot.proxies.aggregate import PAPER_AGGREGATES
from diswot.proxies.registry import PROXIES, ProxySpec, get_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe

#: What ``default`` resolves to wherever a proxy or objective is named (see the module docstring).
#: Chosen by the rule of ``benchmarks/default_rule.py`` (best mean held-out Kendall among the
#: candidates costing at most 3x a forward+backward, over NB201 CIFAR-100 and ImageNet16-120, S1
#: KD and plain, PiT and AutoFormer KD): ZiCo (docs/default_objective.md). The commands' own
#: default objective is still the paper's score.
DEFAULT_PROXY = "zico"

#: The alias of :data:`DEFAULT_PROXY`.
DEFAULT_ALIAS = "default"

#: Reference architectures a composite is ranked against unless it says otherwise.
DEFAULT_SIZE = 256


@dataclass(frozen=True)
class Composite:
    """A composite proxy as data.

    Attributes:
        name: its proxy name.
        terms: registered proxies, each oriented by its ``higher_is_better``.
        size: reference architectures ``K``; ``p_t`` moves in steps of ``1 / (K + 1)``.
        seed: seed of the space's sampling that draws them.
        doc: one line of help (``list_proxies`` and ``--help`` show it).
    """

    name: str
    terms: tuple[str, ...]
    size: int = DEFAULT_SIZE
    seed: int = 0
    doc: str = ""

    @property
    def signs(self) -> tuple[float, ...]:
        """Each term's orientation (multiply a value by it to make larger better)."""
        return tuple(get_proxy(t).sign for t in self.terms)


COMPOSITES: Registry[Composite] = Registry("composite proxy")


def register_composite(
    name: str, terms: Sequence[str], *, size: int = DEFAULT_SIZE, seed: int = 0, doc: str = ""
) -> Composite:
    """Declare composite ``name`` and register it as a proxy (needs the union of its terms' needs).

    Raises :class:`DiswotError` for an unknown term, a term named twice, a composite as a term (its
    reference would need a reference) or a ``size`` below 1.
    """
    terms = tuple(t.strip().lower() for t in terms)
    if not terms:
        raise DiswotError(f"composite '{name}' needs at least one term")
    if len(set(terms)) != len(terms):
        raise DiswotError(f"composite '{name}' lists a term twice; name each term once")
    specs = [get_proxy(t) for t in terms]
    nested = [s.name for s in specs if s.needs_space]
    if nested:
        raise DiswotError(f"composite '{name}' cannot have the composite '{nested[0]}' as a term")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DiswotError(f"composite '{name}' needs a reference size of at least 1, got {size!r}")
    comp = Composite(name.lower(), terms, int(size), int(seed), doc)
    COMPOSITES.register(comp.name, comp)
    PROXIES.register(
        comp.name,
        ProxySpec(
            name=comp.name,
            fn=_CompositeValue(comp.name),
            higher_is_better=True,
            needs_teacher=any(s.needs_teacher for s in specs),
            needs_labels=any(s.needs_labels for s in specs),
            needs_grad=any(s.needs_grad for s in specs),
            needs_batchnorm=any(s.needs_batchnorm for s in specs),
            needs_space=True,
            doc=doc or f"sum of log reference percentiles of {', '.join(terms)}",
        ),
    )
    return comp


@dataclass(frozen=True)
class _CompositeValue:
    """A composite's proxy function: its probe's scorer holds the reference sample (picklable)."""

    name: str

    def __call__(self, probe: StudentProbe) -> float:
        reference = probe.scorer.reference(self.name, probe.seed)
        return reference.value(probe)


def get_composite(name: str) -> Composite:
    """The composite registered as ``name``."""
    return COMPOSITES.get(name)


def is_composite(name: str) -> bool:
    """Whether proxy ``name`` is a composite (ranked against a reference sample)."""
    return name.lower() in COMPOSITES


def resolve_alias(name: str) -> str:
    """``default`` as :data:`DEFAULT_PROXY`; any other name as given."""
    return DEFAULT_PROXY if name.strip().lower() == DEFAULT_ALIAS else name


def resolve_aliases(spec: str) -> str:
    """A comma list (members of ``a+b`` ensembles too) with every ``default`` resolved."""
    items = [i.strip() for i in spec.split(",")]
    return ",".join("+".join(resolve_alias(m) for m in item.split("+")) for item in items)


# -- the maths ------------------------------------------------------------------------------------
def oriented(values: Sequence[float] | np.ndarray, sign: float) -> np.ndarray:
    """``values * sign`` in float64 with every non-finite value as ``-inf`` (ranked lowest)."""
    v = np.asarray(values, dtype=np.float64) * sign
    return np.where(np.isfinite(v), v, -np.inf)


def mid_rank_cdf(value: float, reference_sorted: np.ndarray) -> float:
    """``(below + 0.5 * equal + 0.5) / (K + 1)`` of ``value`` within ``reference_sorted``.

    Both already oriented (:func:`oriented`: larger is better, non-finite as ``-inf``) and the
    reference sorted ascending; ``K`` is its length.
    """
    below = int(np.searchsorted(reference_sorted, value, side="left"))
    equal = int(np.searchsorted(reference_sorted, value, side="right")) - below
    return (below + 0.5 * equal + 0.5) / (reference_sorted.size + 1)


def log_cdf_sum(values: Sequence[float], references_sorted: Sequence[np.ndarray]) -> float:
    """``sum_t log(mid_rank_cdf(values[t], references_sorted[t]))``, oriented inputs as above.

    Summed in term order with Python floats, so a value is the same number on every machine.
    """
    if len(values) != len(references_sorted):
        raise ValueError("one reference column per term value is needed")
    return float(sum(math.log(mid_rank_cdf(v, ref)) for v, ref in zip(values, references_sorted)))


# -- the published aggregates, population-independent ---------------------------------------------
# Their terms are PAPER_AGGREGATES', so the population and reference forms cannot drift apart.
register_composite(
    "az_nas",
    PAPER_AGGREGATES["az_nas"],
    doc="AZ-NAS (CVPR 2024): its 4 terms' log percentiles in a reference sample of the space",
)
register_composite(
    "zc_agg",
    ("vkdnw_jacov", "meco", "zico"),
    doc="jacov, MeCo and ZiCo log percentiles: the best composite designed on NB201 CIFAR-10",
)
register_composite(
    "vkdnw_agg",
    PAPER_AGGREGATES["vkdnw_agg"],
    doc="VKDNW_agg (CVPR 2025): its 5 terms' log percentiles in a reference sample of the space",
)

__all__ = [
    "COMPOSITES",
    "DEFAULT_ALIAS",
    "DEFAULT_PROXY",
    "DEFAULT_SIZE",
    "Composite",
    "get_composite",
    "is_composite",
    "log_cdf_sum",
    "mid_rank_cdf",
    "oriented",
    "register_composite",
    "resolve_alias",
    "resolve_aliases",
]
