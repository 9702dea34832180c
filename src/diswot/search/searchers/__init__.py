"""The search algorithms, by the name ``--algorithm`` takes (see :mod:`.base` for the protocol)."""

from __future__ import annotations

from diswot.search.searchers.base import Searcher, drive
from diswot.search.searchers.evolution import Evolution
from diswot.search.searchers.exhaustive import Exhaustive, require_enumerable
from diswot.search.searchers.random import RandomSearch

#: ``--algorithm`` name -> searcher class.
SEARCHERS: dict[str, type[Searcher]] = {
    "evolution": Evolution,
    "random": RandomSearch,
    "exhaustive": Exhaustive,
}

ALGORITHMS: tuple[str, ...] = tuple(SEARCHERS)

__all__ = [
    "ALGORITHMS",
    "SEARCHERS",
    "Evolution",
    "Exhaustive",
    "RandomSearch",
    "Searcher",
    "drive",
    "require_enumerable",
]
