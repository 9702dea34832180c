"""Training-free student search: aging evolution, random and exhaustive search under a size budget.

One home per concept:

* :mod:`.budget`: :class:`Budget` and the ``100M``-style counts it is written in;
* :mod:`.objective`: what is maximised (:class:`ProxyObjective`, :class:`Evaluation`, factories);
* :mod:`.ledger`: budget admission, candidate records, dedup, replay on resume, ``candidates.jsonl``;
* :mod:`.searchers`: the algorithms (propose a candidate, be told its record);
* :mod:`.config`: :class:`SearchConfig`, the settings ``settings.json`` holds and a resume matches;
* :mod:`.result`, :mod:`.plot`: the winner, ``result.json``, the summary and ``progress.png``;
* :mod:`.api`: :func:`run_search`, which puts them together.
"""

from __future__ import annotations

from diswot.runfolder import SETTINGS
from diswot.search.api import run_search
from diswot.search.budget import Budget, format_count, parse_count
from diswot.search.config import (
    DEFAULT_CYCLES,
    DEFAULT_POPULATION,
    DEFAULT_SAMPLE_SIZE,
    EXHAUSTIVE_UP_TO,
    SearchConfig,
    default_algorithm,
    default_out_dir,
    read_settings,
)
from diswot.search.ledger import CANDIDATES, load_candidates
from diswot.search.objective import Evaluation, Objective, ProxyObjective
from diswot.search.plot import PLOT, plot_progress
from diswot.search.result import RESULT, SearchResult
from diswot.search.searchers import ALGORITHMS

__all__ = [
    "ALGORITHMS",
    "CANDIDATES",
    "DEFAULT_CYCLES",
    "DEFAULT_POPULATION",
    "DEFAULT_SAMPLE_SIZE",
    "EXHAUSTIVE_UP_TO",
    "PLOT",
    "RESULT",
    "SETTINGS",
    "Budget",
    "Evaluation",
    "Objective",
    "ProxyObjective",
    "SearchConfig",
    "SearchResult",
    "default_algorithm",
    "default_out_dir",
    "format_count",
    "load_candidates",
    "parse_count",
    "plot_progress",
    "read_settings",
    "run_search",
]
