"""Scoring several students in one pass: :func:`score_group` behind :meth:`Scorer.score_many`.

A probe batch of 16-64 images at 32 px keeps a GPU mostly idle between small kernels, so one
candidate at a time spends its time launching them. Here the G candidates of a group run
together, per probe seed:

* **the shared forward pass** of NB201 candidates (what ``diswot``, ``ms``, ``mr`` and every
  proxy reading :attr:`StudentProbe.features` need) comes from one grouped pass
  (:class:`~diswot.models.nb201_grouped.GroupedNB201`: the candidates folded into the channel
  dimension, each op run as one grouped convolution over the candidates that use it) on the
  weights the supernet engine gives each candidate alone;
* **ZiCo**, the default rule's proxy, gets each candidate's per-layer gradients on both halves of
  the probe batch from one grouped forward and backward per half: the candidates never interact,
  so the gradient of the summed losses is each candidate's own.

Everything else (another space, the ``modules`` engine, a proxy with no grouped form, bf16)
runs one candidate at a time exactly as :meth:`Scorer.score` does, and :class:`GroupReport` says
which proxies ran grouped and why the others did not. Values equal the one-at-a-time values to
float tolerance (a grouped convolution may sum in another order): ``tests/test_group.py``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from diswot.scoring.numerics import NUMERICAL_FAILURES, proxy_value, strict_fp32
from diswot.scoring.student import StudentLike, StudentProbe

if TYPE_CHECKING:
    from diswot.models.nb201_grouped import GroupedNB201
    from diswot.scoring.scorer import Scorer, ScoreResult

__all__ = [
    "FEATURE_PROXIES",
    "GROUPED",
    "MAX_AUTO_GROUP",
    "GroupReport",
    "choose_group",
    "evaluate_group",
    "grouped_proxies",
    "score_group",
]

#: Proxies computed from the shared forward pass alone (the student's features, its closed-form
#: classifier gradient and the teacher cache): a grouped forward gives all of them.
FEATURE_PROXIES: frozenset[str] = frozenset({"diswot", "ms", "mr"})


@dataclass
class GroupReport:
    """What one :func:`score_group` call ran grouped, and why the rest ran one at a time."""

    size: int
    grouped: list[str] = field(default_factory=list)
    alone: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """One line for a run's log: ``group 8: diswot grouped; zico one at a time (why)``."""
        parts = [f"group {self.size}"]
        if self.grouped:
            parts.append(", ".join(self.grouped) + " grouped")
        for name, why in self.alone.items():
            parts.append(f"{name} one at a time ({why})")
        return "; ".join(parts)


def _nb201_reason(scorer: Scorer, students: Sequence[StudentLike]) -> str | None:
    """Why these students cannot run through the grouped NB201 pass (``None``: they can)."""
    if scorer.engine != "supernet":
        return f"the {scorer.engine} engine builds each network; grouping needs the NB201 supernet"
    if not all(isinstance(s, str) for s in students):
        return "students given as modules"
    if scorer.precision != "fp32":
        return f"precision {scorer.precision}: the grouped pass is fp32 only"
    from diswot.models.nb201_supernet import NB201Supernet

    if not isinstance(scorer.supernet_for(students[0]), NB201Supernet):
        return "this space has no grouped form (NB201 only so far)"
    return None


def _grouped_net(scorer: Scorer) -> GroupedNB201:
    if scorer._grouped is None:
        from diswot.models.nb201_grouped import GroupedNB201

        scorer._grouped = GroupedNB201(scorer.num_classes, device=scorer.device)
    return scorer._grouped


def _group_features(scorer: Scorer, probes: list[StudentProbe]) -> None:
    """Every probe's shared forward from one grouped pass (train-mode BN, no autograd)."""
    from diswot.models.nb201_grouped import gaussian_weights

    supernet = scorer.supernet_for(probes[0].student)
    archs = [str(p.student) for p in probes]
    weights = [gaussian_weights(supernet, a, p.init_seed) for a, p in zip(archs, probes)]  # type: ignore[arg-type]
    x = probes[0].inputs
    with strict_fp32(), torch.no_grad():
        feats = _grouped_net(scorer).features(archs, weights, x.contiguous())
    for p, f in zip(probes, feats):
        p._features = p._accept(f)


def _group_zico(scorer: Scorer, probes: list[StudentProbe]) -> None:
    """ZiCo of every probe from one grouped forward and backward per half batch; each value is
    left in the probe's memo, where :func:`~diswot.proxies.zico.zico` finds it."""
    from diswot.models.nb201_grouped import module_weights
    from diswot.proxies._paper import paper_model
    from diswot.proxies._shared import finite_or_nan, prunable_layers
    from diswot.proxies.zico import ZICO_BATCHES, zico_from_gradients

    x, y = probes[0].inputs, probes[0].labels
    if x.shape[0] < ZICO_BATCHES:
        return  # the proxy itself says NaN
    models = [paper_model(p, "default") for p in probes]
    slots, biases = zip(*(module_weights(m) for m in models))
    layers = [[m.weight for m in prunable_layers(model)] for model in models]
    flat = [w for ws in layers for w in ws]
    archs = [str(p.student) for p in probes]
    net = _grouped_net(scorer)
    per_half: list[tuple[Tensor | None, ...]] = []
    previous = [w.requires_grad for w in flat]
    try:
        for w in flat:
            w.requires_grad_(True)
        for xh, yh in zip(x.tensor_split(ZICO_BATCHES), y.tensor_split(ZICO_BATCHES)):
            with strict_fp32(), torch.enable_grad():
                feats = net.features(archs, list(slots), xh.contiguous(), list(biases))
                loss = sum(F.cross_entropy(f.logits, yh) for f in feats)
                per_half.append(torch.autograd.grad(loss, flat, allow_unused=True))  # type: ignore[arg-type]
    finally:
        for w, flag in zip(flat, previous):
            w.requires_grad_(flag)
    start = 0
    for p, ws in zip(probes, layers):
        stacks = []
        for i, w in enumerate(ws):
            halves = [h[start + i] for h in per_half]
            stacks.append(torch.stack([torch.zeros_like(w) if g is None else g for g in halves]))
        start += len(ws)
        p.memo["zico"] = finite_or_nan(zico_from_gradients(stacks))


#: Proxies with a grouped form: name -> (why the students cannot use it or None, fill the probes).
GROUPED: dict[
    str,
    tuple[
        Callable[[Scorer, Sequence[StudentLike]], str | None],
        Callable[[Scorer, list[StudentProbe]], None],
    ],
] = {"zico": (_nb201_reason, _group_zico)}


def grouped_proxies(
    scorer: Scorer,
    students: Sequence[StudentLike],
    proxies: Sequence[str],
    size: int | None = None,
) -> GroupReport:
    """Which of ``proxies`` run grouped for ``students``, and why the others do not; ``size``
    (default: the students') is the group the report names when ``students`` only sample it."""
    report = GroupReport(len(students) if size is None else size)
    if len(students) < 2:
        report.alone = {n: "a group of one" for n in proxies}
        return report
    feature_why = _nb201_reason(scorer, students)
    for name in proxies:
        if name in FEATURE_PROXIES:
            why = feature_why
        elif name in GROUPED:
            why = GROUPED[name][0](scorer, students)
        else:
            why = "no grouped form"
        if why is None:
            report.grouped.append(name)
        else:
            report.alone[name] = why
    return report


def evaluate_group(
    scorer: Scorer,
    students: Sequence[StudentLike],
    proxies: Sequence[str],
    seed: int,
    report: GroupReport | None = None,
) -> list[dict[str, float]]:
    """:meth:`Scorer.evaluate` of every student under one probe seed, the proxies ``report``
    (default: :func:`grouped_proxies`) groups run in one pass. A numerical failure of a grouped
    pass fails that pass only: each student then computes the proxy alone, where the failure
    becomes its NaN as in :meth:`Scorer.evaluate`."""
    report = report or grouped_proxies(scorer, students, proxies)
    if any(scorer.has_teacher and n in FEATURE_PROXIES for n in report.grouped):
        scorer.teacher(seed)
    probes = [scorer.probe(s, seed) for s in students]
    if any(n in FEATURE_PROXIES for n in report.grouped):
        # On a numerical failure each probe runs its own forward and meets it itself.
        with contextlib.suppress(*NUMERICAL_FAILURES):
            _group_features(scorer, probes)
    for name in report.grouped:
        if name in GROUPED:
            with contextlib.suppress(*NUMERICAL_FAILURES):
                GROUPED[name][1](scorer, probes)
    out = []
    for probe in probes:
        vals = {name: proxy_value(name, probe) for name in proxies}
        if probe.has_diswot:
            vals["_semantic_form"] = probe.diswot["semantic_form"]  # type: ignore[assignment]
        out.append(vals)
    return out


def score_group(
    scorer: Scorer, students: list[StudentLike], proxies: list[str]
) -> list[ScoreResult]:
    """:meth:`Scorer.score` of every student, the groupable proxies in one pass per seed
    (:func:`evaluate_group`); seconds are the group's wall time shared equally."""
    report = grouped_proxies(scorer, students, proxies)
    scorer.last_group = report
    if not report.grouped:
        return [scorer.score(s, proxies) for s in students]
    t0 = time.perf_counter()
    per_seed: list[list[dict[str, float]]] = [[] for _ in students]
    info: list[dict[str, str]] = [{} for _ in students]
    for seed in scorer.seeds:
        for i, vals in enumerate(evaluate_group(scorer, students, proxies, seed, report)):
            form = vals.pop("_semantic_form", None)
            if form is not None:
                info[i]["semantic_form"] = str(form)
            per_seed[i].append(vals)
    share = (time.perf_counter() - t0) / len(students)
    return [
        scorer.result(s, proxies, vals, share, inf)
        for s, vals, inf in zip(students, per_seed, info)
    ]


#: The largest automatic group: past it a GPU gains little and a failure loses more work.
MAX_AUTO_GROUP = 64


def choose_group(scorer: Scorer, proxies: Sequence[str], asked: int | None = None) -> int:
    """Candidates per grouped pass: ``asked`` when given; else 1 on a CPU, where a grouped pass
    is no faster per candidate (the pass is bound by memory traffic, not by launching kernels:
    ``docs/scale.md``), and on a GPU as many as half its free memory holds by the probe's
    memory estimate (:mod:`diswot.scoring.memory`), at most :data:`MAX_AUTO_GROUP`."""
    if asked is not None:
        return max(1, int(asked))
    if scorer.device.type != "cuda":
        return 1
    from diswot.scoring.memory import available_bytes, estimate_probe_memory

    space = scorer.space
    sample = space.enumerate()[0] if space is not None and space.size() else None  # type: ignore[attr-defined]
    estimate = estimate_probe_memory(scorer, sample, list(proxies))
    free = available_bytes(scorer.device)
    if estimate is None or not free:
        return 1
    per = max(estimate.at(scorer.batch_size), 1)
    return max(1, min(MAX_AUTO_GROUP, int(0.5 * free // per)))
