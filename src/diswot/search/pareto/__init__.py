"""Pareto search: maximise the score while minimising params, FLOPs or measured latency.

One home per concept:

* :mod:`.config`: :class:`ParetoConfig`, the ``pareto`` object of ``settings.json``;
* :mod:`.front`: the costs (:data:`COSTS`) and the non-dominated front of scored candidates;
* :mod:`.encoding`: each space's architectures as the Optuna parameters NSGA-II evolves;
* :mod:`.measure`: latency per candidate (a budget, a journal read back on resume, a record field);
* :mod:`.result`, :mod:`.plot`: :class:`ParetoResult`, ``pareto.json``/``.csv``/``.png``;
* :mod:`.plan`: what :func:`~diswot.search.api.run_search` asks at each point a Pareto search
  differs from the others.

The algorithm itself is Optuna's NSGA-II (:mod:`diswot.search.searchers.nsga2`); Optuna is an
optional dependency (``pip install 'diswot[pareto]'``).
"""

from __future__ import annotations

from diswot.search.pareto.config import ParetoConfig
from diswot.search.pareto.front import COSTS, pareto_front
from diswot.search.pareto.result import ParetoResult

__all__ = ["COSTS", "ParetoConfig", "ParetoResult", "pareto_front"]
