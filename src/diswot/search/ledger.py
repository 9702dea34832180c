"""The search's bookkeeping: which candidates the budget admits, and the record of every one scored.

Two pieces, both independent of the algorithm that proposes candidates:

* :class:`Admission` checks a candidate against the budget **before** it is scored, redraws an
  inadmissible sample or mutation (bounded by ``max_retries``) and counts what it turned away;
* :class:`Ledger` gives each new candidate its step, looks a repeat up instead of rescoring it,
  replays a resumed run's recorded scores (checking that the replayed arch is the recorded one),
  sends the rest to the worker pool, appends each new record to ``candidates.jsonl`` and keeps the
  history the progress plot shows.

A candidate the ledger is asked about is in one of the :class:`State` s; claims are finished in
claim order, so step numbers and the journal do not depend on which worker finished first.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from diswot.errors import DiswotError
from diswot.models.cost import ModelCost
from diswot.runfolder import Journal, json_float
from diswot.search.budget import Budget, format_count
from diswot.spaces import SearchSpace

#: The run folder's journal of scored candidates, one JSON record per line in step order.
CANDIDATES = "candidates.jsonl"


def score_key(rec: dict) -> float:
    """Selection key of a record: a NaN or missing score ranks last."""
    s = rec["score"]
    return s if s is not None and math.isfinite(s) else -math.inf


def _is_next_record(rec: Any, index: int) -> bool:
    """A journal line is good when it is the next step's record of an arch, with its score."""
    return (
        isinstance(rec, dict)
        and rec.get("step") == index + 1
        and isinstance(rec.get("arch"), str)
        and "score" in rec
    )


def candidate_journal(path: str | Path) -> Journal:
    """The journal of ``candidates.jsonl`` at ``path``: records must be steps 1, 2, 3..."""
    return Journal(
        path,
        check=_is_next_record,
        fix="fix or delete that line (and those after it), or start again with another --out",
    )


def load_candidates(path: str | Path) -> list[dict]:
    """Records of ``candidates.jsonl`` in step order.

    A half-written last line (the process was killed mid-write) is dropped and cut from the file so
    appending continues cleanly; any other unreadable or out-of-order line raises :class:`DiswotError`.
    """
    return candidate_journal(path).read()


class State(Enum):
    """Where a candidate the ledger was asked to score stands."""

    #: Already scored or in flight: takes no step and resolves to the first one's record.
    DUPLICATE = "duplicate"
    #: Recorded by the run being resumed: its score is read back, not computed again.
    REPLAYED = "replayed"
    #: New: sent to the pool, its score is collected by :meth:`Ledger.finish`.
    SCORING = "scoring"


@dataclass(frozen=True)
class Claim:
    """A candidate the ledger has taken in: its state and what finishing it needs."""

    state: State
    arch: str
    record: dict | None = None  # REPLAYED: the recorded record
    step: int = 0  # SCORING: the step it will be recorded at
    cost: ModelCost | None = None  # SCORING
    ticket: Any = None  # SCORING: the pool's handle on the running score


class Admission:
    """Budget checks of one space: redraws of inadmissible candidates, and their count.

    Args:
        max_retries: redraws of an over-budget sample or mutation before giving up on it.
    """

    def __init__(
        self,
        space: SearchSpace,
        budget: Budget,
        num_classes: int,
        image_size: int,
        max_retries: int,
    ) -> None:
        self.space = space
        self.budget = budget
        self.num_classes = num_classes
        self.image_size = image_size
        self.max_retries = max_retries
        self.rejected = 0  # candidates turned away by the budget (reported as rejected_by_budget)
        self._admissible: list[str] | None = None

    def check(self, seed: int, exhaustive: bool) -> None:
        """Fail fast, before any file or teacher, when the budget admits nothing.

        Draws from a private RNG and resets the count, so the search's own stream is untouched.
        """
        if exhaustive:
            self.admissible()
        elif not self.budget.unbounded:
            self.sample(random.Random(f"budget-check-{seed}"))
        self.rejected = 0

    def cost(self, arch: str) -> ModelCost:
        return self.space.cost(arch, self.num_classes, self.image_size)

    def admits(self, arch: str) -> bool:
        """Whether ``arch`` is within budget; one that is not counts as rejected."""
        ok = self.budget.admits(self.cost(arch))
        if not ok:
            self.rejected += 1
        return ok

    def admissible(self) -> list[str] | None:
        """All admissible archs of an enumerable space (computed once), else ``None``."""
        if self._admissible is None:
            archs = self.space.enumerate()
            if archs is None:
                return None
            self._admissible = [a for a in archs if self.budget.admits(self.cost(a))]
            if not self._admissible:
                raise DiswotError(self._nothing_admitted(archs, f"all {len(archs)} architectures"))
        return self._admissible

    def _nothing_admitted(self, archs: Iterable[str], what: str) -> str:
        costs = [self.cost(a) for a in archs]
        p = [c.params for c in costs]
        f = [c.flops for c in costs]
        return (
            f"the budget ({self.budget.text()}) admits none of {what} of space "
            f"'{self.space.name}' (params {format_count(min(p))}..{format_count(max(p))}, FLOPs "
            f"{format_count(min(f))}..{format_count(max(f))}); loosen --max-params/--max-flops"
        )

    def sample(self, rng: random.Random) -> str:
        """A sample within budget: rejection sampling, then the admissible list of small spaces."""
        seen = []
        for _ in range(self.max_retries):
            arch = self.space.sample(rng)
            if self.admits(arch):
                return arch
            seen.append(arch)
        pool = self.admissible()
        if pool is None:
            raise DiswotError(self._nothing_admitted(seen, f"{len(seen)} random samples"))
        return rng.choice(pool)

    def mutate(self, parent: str, rng: random.Random) -> str | None:
        """A mutation of ``parent`` within budget, or ``None`` when none was found in time."""
        for _ in range(self.max_retries):
            child = self.space.mutate(parent, rng)
            if self.admits(child):
                return child
        return None


class Ledger:
    """Steps, dedup, replay of recorded scores, the journal of new ones, history and progress.

    Args:
        admission: the budget checks (each claimed candidate is checked once more, defensively).
        cycles: scored candidates after which nothing new is claimed.
        recorded: the records of the run being resumed (``[]`` for a new run).
        journal: where new records are appended (``None``: nothing is written).
        pool: evaluates the timed objective, in this process or on workers
            (``submit(arch) -> ticket``, ``result(ticket) -> (Evaluation, seconds)``).
    """

    def __init__(
        self,
        admission: Admission,
        cycles: int,
        recorded: list[dict],
        journal: Journal | None,
        pool: Any,
    ) -> None:
        self.admission = admission
        self.cycles = cycles
        self.recorded = recorded
        self.journal = journal
        self.pool = pool
        self.scored: dict[str, dict] = {}
        self.order: list[dict] = []  # scored records in step order
        self.history: dict[str, list] = {"step": [], "best": [], "population_mean": []}
        self.best: dict | None = None
        self.steps = 0  # finished claims, duplicates included
        self._sum, self._n = 0.0, 0
        self._claimed = 0
        self._in_flight: set[str] = set()
        self.bar = tqdm(disable=True)

    def start(self, progress: bool, name: str) -> None:
        """Open the progress bar (after the slow, failure-prone setup is done)."""
        self.bar = tqdm(
            total=self.cycles,
            desc=f"search {name}",
            unit="cand",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )

    @property
    def done(self) -> bool:
        return len(self.order) >= self.cycles

    @property
    def claimed_enough(self) -> bool:
        """No new candidate may be claimed: ``cycles`` are scored or on their way."""
        return self._claimed >= self.cycles

    def claim(self, arch: str) -> Claim:
        """Reserve the next step for ``arch`` and start scoring it; :meth:`finish` collects it.

        Claims are finished in claim order, so the step numbers, ``candidates.jsonl`` and every
        later proposal are the same whichever worker finished first. An arch already scored or in
        flight is a duplicate: it takes no step and resolves to the first one's record.
        """
        if arch in self.scored or arch in self._in_flight:
            return Claim(State.DUPLICATE, arch)
        step = self._claimed + 1
        cost = self.admission.cost(arch)
        if not self.admission.budget.admits(cost):  # defensive: every caller checks first
            raise AssertionError(f"inadmissible candidate {arch} reached scoring")
        self._claimed += 1
        self._in_flight.add(arch)
        if step <= len(self.recorded):
            return Claim(State.REPLAYED, arch, record=self._replay(step, arch, cost))
        return Claim(State.SCORING, arch, step=step, cost=cost, ticket=self.pool.submit(arch))

    def _replay(self, step: int, arch: str, cost: ModelCost) -> dict:
        """The recorded record of ``step``, refused unless this search proposes the same arch."""
        rec = self.recorded[step - 1]
        if rec["arch"] != arch:
            raise DiswotError(
                f"{CANDIDATES} step {step} holds {rec['arch']!r} but this search proposes {arch!r}; "
                "the folder was written with other settings or code, use another --out"
            )
        if (
            rec.get("params", cost.params) != cost.params
            or rec.get("flops", cost.flops) != cost.flops
        ):
            raise DiswotError(
                f"{CANDIDATES} step {step} records another size for {arch!r} than this code "
                "computes; the folder was written with other settings, use another --out"
            )
        if rec["score"] is None:  # JSON's spelling of a NaN score
            rec["score"] = math.nan
        return rec

    def finish(self, claim: Claim) -> tuple[dict, bool]:
        """The record of a claim (blocking until its score is in) and whether it is new."""
        self.steps += 1
        if claim.state is State.DUPLICATE:
            return self.scored[claim.arch], False
        if claim.state is State.REPLAYED:
            assert claim.record is not None
            rec = claim.record
        else:
            assert claim.cost is not None
            ev, seconds = self.pool.result(claim.ticket)
            rec = {
                "step": claim.step,
                "arch": claim.arch,
                "score": float(ev.score),
                "value": float(ev.score if ev.value is None else ev.value),
                "components": {k: float(v) for k, v in ev.components.items()},
                "params": claim.cost.params,
                "flops": claim.cost.flops,
                "seconds": round(seconds, 4),
            }
            self._append(rec)
        self._in_flight.discard(claim.arch)
        self.scored[claim.arch] = rec
        self.order.append(rec)
        if self.best is None or score_key(rec) > score_key(self.best):
            self.best = rec
        self.bar.update(1)
        self.bar.set_postfix(best=f"{score_key(self.best):.4g}", refresh=False)
        return rec, True

    def note(self, population: Iterable[dict] | None = None) -> None:
        """History point after a new candidate: best so far and the population's mean score.

        ``population=None`` means "everything scored so far" (random/exhaustive search), kept as a
        running sum so long runs stay linear.
        """
        if population is None:
            v = score_key(self.order[-1])
            if math.isfinite(v):
                self._sum += v
                self._n += 1
            mean = self._sum / self._n if self._n else None
        else:
            finite = [v for v in map(score_key, population) if math.isfinite(v)]
            mean = float(np.mean(finite)) if finite else None
        self.history["step"].append(len(self.order))
        self.history["best"].append(json_float(score_key(self.best)) if self.best else None)
        self.history["population_mean"].append(mean)

    def _append(self, rec: dict) -> None:
        if self.journal is None:
            return
        self.journal.append(
            {
                **rec,
                "score": json_float(rec["score"]),
                "value": json_float(rec["value"]),
                "components": {k: json_float(v) for k, v in rec["components"].items()},
            }
        )

    def close(self) -> None:
        self.bar.close()
        if self.journal is not None:
            self.journal.close()


__all__ = [
    "CANDIDATES",
    "Admission",
    "Claim",
    "Ledger",
    "State",
    "candidate_journal",
    "load_candidates",
    "score_key",
]
