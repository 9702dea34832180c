"""Random search: independent samples within the budget (the baseline evolution must beat)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from diswot.search.ledger import Admission
from diswot.search.searchers.base import Searcher

if TYPE_CHECKING:
    from diswot.search.config import SearchConfig


class RandomSearch(Searcher):
    """Each proposal a fresh admissible sample; a repeat is looked up and counts toward a stall."""

    def __init__(self, admission: Admission, rng: random.Random) -> None:
        self.admission = admission
        self.rng = rng

    @classmethod
    def from_config(
        cls, admission: Admission, rng: random.Random, cfg: SearchConfig
    ) -> RandomSearch:
        return cls(admission, rng)

    def propose(self, in_flight: int) -> str:
        return self.admission.sample(self.rng)


__all__ = ["RandomSearch"]
