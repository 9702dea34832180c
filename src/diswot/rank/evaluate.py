"""Scoring for ``rank``: one (architecture, seed) with exclusive per-proxy seconds, a stream of
them on this process, and the picklable factory that lets :mod:`diswot.parallel` do the same on
workers (the parallel package receives it and imports nothing of scoring)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import torch

from diswot.proxies import get_proxy
from diswot.rank.plan import _Plan
from diswot.scoring import NUMERICAL_FAILURES, Scorer, proxy_value
from diswot.scoring.teacher import reload_teacher

#: One unit of work: an architecture, a seed and the proxies still missing for it.
Task = tuple[str, int, list[str]]
#: One result, as ``scores.jsonl`` stores it: arch, seed, proxy values, exclusive seconds.
Record = tuple[str, int, dict[str, float], dict[str, float]]


def evaluate_timed(
    scorer: Scorer, arch: str, proxies: Sequence[str], seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Values and seconds of ``proxies`` for one (architecture, seed) on one shared probe.

    Same failure policy as :meth:`Scorer.evaluate` (a numerical failure gives NaN, a user error
    propagates). Seconds are *exclusive*: a pass that several proxies read is timed once under its
    own key ``pass:<name>`` and not charged to the proxy that happened to run first. The passes are
    the student's forward (``pass:forward``) and the teacher's (``pass:teacher``, once per seed),
    run up front when a teacher proxy is asked for, and the proxies' shared backward passes
    (:mod:`diswot.proxies._shared`).
    """
    from diswot.proxies._shared import pass_seconds

    probe = scorer.evaluation_probe(arch, proxies, seed)
    values: dict[str, float] = {}
    seconds: dict[str, float] = {}
    specs = [get_proxy(n) for n in proxies]
    if any(s.needs_teacher for s in specs):
        for key in ("teacher", "features"):
            t0 = time.perf_counter()
            # On a numerical failure the proxies meet the same error and report NaN.
            with contextlib.suppress(*NUMERICAL_FAILURES):
                getattr(probe, key)
            name = "pass:forward" if key == "features" else "pass:teacher"
            seconds[name] = time.perf_counter() - t0
    passes = pass_seconds(probe)
    for name in proxies:
        before = dict(passes)
        t0 = time.perf_counter()
        value = proxy_value(name, probe)
        elapsed = time.perf_counter() - t0
        for key, sec in passes.items():
            if key not in before:
                seconds[f"pass:{key}"] = sec
                elapsed -= sec
        seconds[name] = max(elapsed, 0.0)
        values[name] = value
    scorer.release(probe, proxies)
    return values, seconds


def score_tasks(scorer: Scorer, tasks: Sequence[Task], group: int = 1) -> Iterator[Record]:
    """Evaluate ``tasks`` on one Scorer, a record each as it is scored: in order one by one
    (``group=1``), or ``group`` tasks of the same seed and proxies per grouped pass
    (:func:`~diswot.scoring.group.evaluate_group`), whose time each of its records is charged an
    equal share of as ``pass:group``; the tasks left when the list ends go as smaller groups."""
    if group <= 1:
        for arch, seed, need in tasks:
            yield (arch, seed, *evaluate_timed(scorer, arch, need, seed))
        return
    from diswot.scoring.group import evaluate_group

    pending: dict[tuple[int, tuple[str, ...]], list[str]] = {}

    def flush(key: tuple[int, tuple[str, ...]]) -> Iterator[Record]:
        archs, (seed, need) = pending.pop(key), key
        t0 = time.perf_counter()
        values = evaluate_group(scorer, archs, list(need), seed)
        share = {"pass:group": (time.perf_counter() - t0) / len(archs)}
        for arch, vals in zip(archs, values):
            vals.pop("_semantic_form", None)
            yield (arch, seed, vals, dict(share))

    for arch, seed, need in tasks:
        key = (seed, tuple(need))
        pending.setdefault(key, []).append(arch)
        if len(pending[key]) >= group:
            yield from flush(key)
    for key in list(pending):
        yield from flush(key)


def score_chunk(scorer: Scorer, chunk: Sequence[Task]) -> list[Record]:
    """A chunk on one worker's Scorer, exactly as the serial path scores it."""
    return list(score_tasks(scorer, chunk))


def build_teacher(plan: _Plan) -> torch.nn.Module | None:
    """The teacher, built with the target's class count (the Scorer's builder builds the space's
    students); the Scorer re-initialises it under each probe seed unless its trained weights are
    kept (``teacher_init`` keep: a checkpoint, read again here and checked against its digest)."""
    from diswot.models import create_model

    c = plan.config
    if c.teacher is not None and c.teacher_ckpt is not None:
        return reload_teacher(c.teacher_ckpt, c.teacher, c.num_classes, c.teacher_sha256)
    return None if c.teacher is None else create_model(c.teacher, num_classes=c.num_classes)


def make_scorer(
    plan: _Plan, data_root: str | None, teacher: torch.nn.Module | None = None
) -> Scorer:
    """The run's Scorer (the teacher built from the plan unless given)."""
    c = plan.config
    if teacher is None:
        teacher = build_teacher(plan)
    return Scorer.for_space(
        plan.space,
        teacher,
        num_classes=c.num_classes,
        batch_size=c.batch_size,
        seeds=plan.seeds,
        init=c.init,
        data=c.data,
        data_root=data_root,
        image_size=c.image_size,
        device=c.device,
        precision=c.precision,
        engine=c.engine,
        teacher_init=c.teacher_init,
    )


@dataclasses.dataclass
class ChunkScorerFactory:
    """What a worker needs to score chunks as this process would: the run plan (without its sample
    and ground truth, which workers never read) and the data folder. Pickled once per worker; each
    worker builds its Scorer once (and, with ``warm_teacher``, every seed's teacher cache at
    start-up, to fail fast and once), then scores chunks with it."""

    plan: _Plan
    data_root: str | None
    warm_teacher: bool

    def __post_init__(self) -> None:
        self.plan = dataclasses.replace(self.plan, archs=[], truth={})

    def __call__(self) -> Callable[[Sequence[Task]], list[Record]]:
        scorer = make_scorer(self.plan, self.data_root)
        if self.warm_teacher:
            for s in self.plan.seeds:
                scorer.teacher(s)
        return partial(score_chunk, scorer)
