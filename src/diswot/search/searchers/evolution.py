"""Aging evolution (Real et al. 2019), as the DisWOT paper searches NB201.

A tournament of ``sample_size`` members drawn from the population, the tournament's **best** is the
parent, its mutated child joins the population and the **oldest** member leaves, whatever its score.
With several candidates in flight the evolution is asynchronous: a proposal is made whenever a slot
frees, and each result joins the population as soon as it is taken.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING

from diswot.search.ledger import Admission, score_key
from diswot.search.searchers.base import Searcher

if TYPE_CHECKING:
    from diswot.search.config import SearchConfig


class Evolution(Searcher):
    """Aging evolution with an optional crossover of two tournament winners.

    Args:
        population_size, sample_size: the population and tournament sizes.
        crossover_prob: chance that a child is the crossover of two tournament winners (0 = the
            paper's mutation-only evolution).
    """

    def __init__(
        self,
        admission: Admission,
        rng: random.Random,
        population_size: int,
        sample_size: int,
        crossover_prob: float = 0.0,
    ) -> None:
        self.admission = admission
        self.rng = rng
        self.population_size = population_size
        self.sample_size = sample_size
        self.crossover_prob = crossover_prob
        self.population: deque[dict] = deque()

    @classmethod
    def from_config(cls, admission: Admission, rng: random.Random, cfg: SearchConfig) -> Evolution:
        return cls(admission, rng, cfg.population, cfg.sample_size, cfg.crossover_prob)

    def can_propose(self, in_flight: int) -> bool:
        # Every slot holds an initial sample: the first results must come in before any child.
        return bool(self.population) or in_flight < self.population_size

    def propose(self, in_flight: int) -> str | None:
        """A random sample while the population plus the ``in_flight`` candidates are fewer than
        ``population_size``, else a child of the current population's tournament winner (``None``:
        no child fits the budget)."""
        members = list(self.population)
        if len(members) + in_flight < self.population_size:
            return self.admission.sample(self.rng)
        return self._child(members)

    def _child(self, members: list[dict]) -> str | None:
        """A mutated (or crossed-over) child of the best of a random tournament."""
        rng, k = self.rng, min(self.sample_size, len(members))
        parent = max(rng.sample(members, k), key=score_key)
        if self.crossover_prob > 0 and rng.random() < self.crossover_prob:
            other = max(rng.sample(members, k), key=score_key)
            mixed = self.admission.space.crossover(parent["arch"], other["arch"], rng)
            if mixed is not None and mixed != parent["arch"] and self.admission.admits(mixed):
                return mixed
        return self.admission.mutate(parent["arch"], rng)

    def tell(self, record: dict, new: bool) -> None:
        self.population.append(record)  # a repeat is a member too
        if len(self.population) > self.population_size:
            self.population.popleft()  # aging: the oldest leaves, whatever its score

    @property
    def members(self) -> deque[dict]:
        return self.population


__all__ = ["Evolution"]
