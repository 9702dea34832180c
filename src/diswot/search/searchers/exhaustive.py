"""Exhaustive search: every admissible student of an enumerable space, in the space's order."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from diswot.errors import DiswotError
from diswot.search.ledger import Admission, Ledger
from diswot.search.searchers.base import Searcher
from diswot.spaces import SearchSpace

if TYPE_CHECKING:
    from diswot.search.config import SearchConfig


def require_enumerable(space: SearchSpace) -> None:
    """Refuse, before anything is built, a space too large to list."""
    if space.enumerate() is None:
        raise DiswotError(
            f"space '{space.name}' is too large to enumerate; use --algorithm evolution or random"
        )


class Exhaustive(Searcher):
    """Proposes the admissible archs one by one; the inadmissible ones count as rejected once."""

    def __init__(self, admission: Admission) -> None:
        require_enumerable(admission.space)
        admissible = admission.admissible()
        assert admissible is not None  # the space is enumerable
        self.todo = admissible
        self.next = 0
        admission.rejected += len(admission.space.enumerate() or []) - len(admissible)

    @classmethod
    def from_config(cls, admission: Admission, rng: random.Random, cfg: SearchConfig) -> Exhaustive:
        return cls(admission)

    def can_propose(self, in_flight: int) -> bool:
        return self.next < len(self.todo)

    def propose(self, in_flight: int) -> str:
        self.next += 1
        return self.todo[self.next - 1]

    def stop_reason(self, ledger: Ledger) -> str:
        return "exhausted" if len(ledger.order) == len(self.todo) else "cycles"


__all__ = ["Exhaustive", "require_enumerable"]
