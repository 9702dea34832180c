"""What a search maximises: a registered proxy against the teacher, or any ``f(arch)``.

An objective maps an architecture string to a score (larger is better), optionally with the raw
value and named components (:class:`Evaluation`). Objectives are *built* by factories: a worker pool
calls the factory once in every worker, so each worker process or Ray actor has its own Scorer and
teacher cache, and the factory, not the built objective, is what has to pickle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from diswot.spaces import SearchSpace

#: A user's objective: ``f(arch) -> float | Evaluation``.
Objective = Callable[[str], "float | Evaluation"]


@dataclass(frozen=True)
class Evaluation:
    """What an objective returns: ``score`` (larger is better), the raw ``value`` and components."""

    score: float
    value: float | None = None
    components: dict[str, float] = field(default_factory=dict)


def as_evaluation(out: float | Evaluation) -> Evaluation:
    """A plain number as an :class:`Evaluation` whose value is the score."""
    if isinstance(out, Evaluation):
        return out
    v = float(out)
    return Evaluation(score=v, value=v)


class ProxyObjective:
    """A registered proxy (DisWOT by default) as a search objective, oriented by the proxy's sign.

    For ``diswot`` the components ``ms`` and ``mr`` (the semantic and relation terms; they share its
    forward pass) are recorded too, and for a composite its terms (computed for it anyway).
    """

    def __init__(self, scorer: Any, proxy: str = "diswot") -> None:
        from diswot.proxies import get_proxy
        from diswot.proxies.composite import COMPOSITES

        self.spec = get_proxy(proxy)
        self.name = self.spec.name
        self.scorer = scorer
        terms = COMPOSITES.get(self.name).terms if self.name in COMPOSITES else ()
        self.proxies = [self.name] + (["ms", "mr"] if self.name == "diswot" else list(terms))

    def __call__(self, arch: str) -> Evaluation:
        return self._evaluation(self.scorer.score(arch, self.proxies))

    def many(self, archs: list[str]) -> list[Evaluation]:
        """Several candidates at once (:meth:`Scorer.score_many`): the same evaluations."""
        return [self._evaluation(r) for r in self.scorer.score_many(archs, self.proxies)]

    def _evaluation(self, res: Any) -> Evaluation:
        value = res.values[self.name]
        return Evaluation(
            score=value * self.spec.sign,
            value=value,
            components={k: res.values[k] for k in self.proxies[1:]},
        )


@dataclass
class Timed:
    """An objective that also reports its own wall time, measured where it runs (a worker's time
    is its own, not the parent's wait), for the ``seconds`` of each recorded candidate."""

    objective: Objective

    def __call__(self, arch: str) -> tuple[Evaluation, float]:
        t0 = time.perf_counter()
        ev = as_evaluation(self.objective(arch))
        return ev, time.perf_counter() - t0

    def many(self, archs: list[str]) -> list[tuple[Evaluation, float]]:
        """Several candidates in one call where the objective has ``many`` (each charged an equal
        share of the call's time), else one by one."""
        many = getattr(self.objective, "many", None)
        if many is None:
            return [self(a) for a in archs]
        t0 = time.perf_counter()
        evs = [as_evaluation(e) for e in many(archs)]
        share = (time.perf_counter() - t0) / max(len(archs), 1)
        return [(ev, share) for ev in evs]


@dataclass
class GivenObjective:
    """Pool factory for an objective already built (a user's; it must pickle to run on workers)."""

    given: Objective

    def __call__(self) -> Timed:
        return Timed(self.given)


@dataclass
class ProxyObjectiveFactory:
    """Pool factory for the proxy objective: each worker builds its own Scorer and teacher cache,
    with the space's own student builder."""

    space: SearchSpace
    teacher: str | nn.Module
    proxy: str
    num_classes: int
    image_size: int
    seeds: list[int]
    batch_size: int
    init: str
    data: str
    data_root: str | None
    device: str
    precision: str = "fp32"
    engine: str = "auto"
    teacher_init: str | None = None

    def objective(self) -> ProxyObjective:
        """The objective, its teacher built for every probe seed, so that a teacher that does not
        fit (another class count, say) fails now with its own message, not mid-search."""
        from diswot.proxies import get_proxy
        from diswot.scoring import Scorer

        spec = get_proxy(self.proxy)
        scorer = Scorer.for_space(
            self.space,
            self.teacher,
            num_classes=self.num_classes,
            batch_size=self.batch_size,
            seeds=self.seeds,
            init=self.init,
            data=self.data,
            data_root=self.data_root,
            image_size=self.image_size,
            device=self.device,
            precision=self.precision,
            engine=self.engine,
            teacher_init=self.teacher_init,
        )
        # Built even for a teacher-free objective: a teacher named wrong (or with another class
        # count) is a mistake to report now, not to ignore because this objective never reads it.
        for s in self.seeds:
            scorer.teacher(s)
        return ProxyObjective(scorer, spec.name)

    def __call__(self) -> Timed:
        return Timed(self.objective())


__all__ = [
    "Evaluation",
    "GivenObjective",
    "Objective",
    "ProxyObjective",
    "ProxyObjectiveFactory",
    "Timed",
    "as_evaluation",
]
