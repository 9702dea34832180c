"""The published aggregate scores: sums of ``log(rank / N)`` of registered terms over a population.

AZ-NAS and VKDNW rank a population by adding, for each of their terms, the log of the term's rank
divided by the population size. An aggregate therefore exists only for a whole scored population
(like the ``a+b`` rank ensembles of :func:`diswot.proxies.rank_average`), never for one network:
score the terms as ordinary proxies, then combine their columns here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: name -> the registered terms it sums as ``log(rank / N)``.
#:
#: * ``az_nas`` (Lee & Ham, CVPR 2024): expressivity, progressivity, trainability and complexity
#:   (FLOPs), as the AZ-NAS release ranks NB201.
#: * ``vkdnw_agg`` (Tybl & Neumann, CVPR 2025): VKDNW_single (trainable layers, then the Fisher
#:   entropy), AZ-NAS's expressivity and trainability, FLOPs and jacov under the Kaiming init: the
#:   release's ``vkdnw_comb_rank``, the paper's Table 1 row VKDNW_agg. Progressivity is not a term.
PAPER_AGGREGATES: dict[str, tuple[str, ...]] = {
    "az_nas": ("az_expressivity", "az_progressivity", "az_trainability", "flops"),
    "vkdnw_agg": ("vkdnw_single", "az_expressivity", "az_trainability", "flops", "vkdnw_jacov"),
}


def log_rank_sum(columns: Sequence[Sequence[float]]) -> list[float]:
    """``sum_terms log(rank / N)``; each column holds one term for the same ``N`` architectures.

    Larger is better in every column; ranks run 1..N ascending, ties share their average rank. A
    non-finite value (a failed or degenerate term, which the papers' code turns into ``-inf``)
    ranks lowest.
    """
    # Imported here: scipy.stats costs every command 0.6 s at start-up.
    from scipy.stats import rankdata

    if not columns:
        raise ValueError("an aggregate needs at least one term column")
    cols = [np.asarray(c, dtype=np.float64) for c in columns]
    if len({c.size for c in cols}) != 1:
        raise ValueError("every term column needs one value per architecture")
    total = np.zeros(cols[0].size, dtype=np.float64)
    for c in cols:
        total += np.log(rankdata(np.where(np.isfinite(c), c, -np.inf)) / c.size)
    return total.tolist()


def paper_aggregate(name: str, columns: Mapping[str, Sequence[float]]) -> list[float]:
    """The published aggregate ``name`` from its terms' columns (``columns[term]``, same order)."""
    if name not in PAPER_AGGREGATES:
        raise ValueError(f"unknown aggregate {name!r}; known: {', '.join(PAPER_AGGREGATES)}")
    missing = [t for t in PAPER_AGGREGATES[name] if t not in columns]
    if missing:
        raise ValueError(f"aggregate {name!r} needs the columns {', '.join(missing)}")
    return log_rank_sum([columns[t] for t in PAPER_AGGREGATES[name]])
