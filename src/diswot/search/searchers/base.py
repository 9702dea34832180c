"""What every search algorithm is: something that proposes candidates and is told their records.

In the spirit of Optuna's samplers, an algorithm only *decides*; :func:`drive` runs it against a
:class:`~diswot.search.ledger.Ledger`, which owns steps, dedup, replay, budget counts and the
journal. The loop keeps up to ``in_flight`` candidates being scored at once (a proposal whenever a
slot frees) and hands results back in *proposal* order, so a search is a deterministic function of
``(seed, in_flight)`` on any backend, and ``in_flight=1`` is the serial algorithm step for step.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from diswot.search.ledger import Admission, Claim, Ledger

if TYPE_CHECKING:
    from diswot.search.config import SearchConfig


class Searcher(ABC):
    """One search algorithm's decisions.

    Subclasses implement :meth:`propose` and usually :meth:`tell`; the others have defaults that
    fit an algorithm with no population (random search).
    """

    @classmethod
    @abstractmethod
    def from_config(cls, admission: Admission, rng: random.Random, cfg: SearchConfig) -> Searcher:
        """The searcher a run with settings ``cfg`` uses; all its randomness comes from ``rng``."""

    def can_propose(self, in_flight: int) -> bool:
        """Whether a proposal can be made now, with ``in_flight`` candidates still being scored
        (``False``: wait for a result, or nothing is left to propose)."""
        return True

    @abstractmethod
    def propose(self, in_flight: int) -> str | None:
        """The next candidate, within budget; ``None`` when none fits this time (a stall)."""

    def tell(self, record: dict, new: bool) -> None:
        """The record of the oldest proposal still open (``new``: it was scored, not a repeat)."""
        return None  # no population to update

    @property
    def members(self) -> Iterable[dict] | None:
        """The records whose mean score the history plots (``None``: everything scored so far)."""
        return None

    def stop_reason(self, ledger: Ledger) -> str:
        """Why the search ended: ``cycles`` were scored, or proposals kept repeating (stalled)."""
        return "cycles" if ledger.done else "stalled"


def drive(searcher: Searcher, ledger: Ledger, in_flight: int, stall_limit: int) -> str:
    """Run ``searcher`` with ``in_flight`` candidates scored at once; the reason it stopped.

    ``stall_limit`` steps in a row without a new candidate (a proposal that fits no budget, or a
    repeat) end the search: the space or the budget is exhausted.
    """
    queue: deque[Claim] = deque()
    stall = 0
    while True:
        while (
            len(queue) < in_flight
            and not ledger.claimed_enough
            and stall < stall_limit
            and searcher.can_propose(len(queue))
        ):
            arch = searcher.propose(len(queue))
            if arch is None:
                stall += 1
                continue
            queue.append(ledger.claim(arch))
        if not queue:
            break
        record, new = ledger.finish(queue.popleft())
        searcher.tell(record, new)
        stall = 0 if new else stall + 1
        if new:
            ledger.note(searcher.members)
    return searcher.stop_reason(ledger)


__all__ = ["Searcher", "drive"]
