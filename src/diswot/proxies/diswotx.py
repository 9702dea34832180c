"""DisWOT-X: a per-candidate, teacher-aware student score built from one forward pass.

Why a new score: on the shipped ground truth the faithful DisWOT score ranks students worse than
their parameter count (S1 KD Kendall ~0.45 vs 0.87; NB201 ~0.3-0.4 vs ~0.58). Size matters most,
so a useful training-free score must *contain* size and add what size misses: whether the random
network separates the inputs at all (expressivity; dead or disconnected cells get nothing) and
whether its representation resembles the teacher's.

Everything comes from **one** train-mode, no-grad forward of the student on the probe batch, the
same forward DisWOT already pays for (:func:`xparts` runs it through the probe's
``forward_with``, so ``diswot``/``ms``/``mr`` asked in the same call reuse it):

* ``log_params``: natural log of the parameter count (closed form, no forward).
* ``expr``: NASWOT's agreement kernel ``K`` of the binarised ReLU inputs, summed over all ReLUs,
  reported as ``log|det K| / N`` (``N`` the batch size). Since ``K_ii = d`` (the number of ReLU
  units), ``expr = log d + mean_i log eig_i(K / d)``: a log-count of units plus a (non-positive)
  decorrelation term, so it is in the same natural-log units as ``log_params``. ``-inf`` when the
  kernel is singular (e.g. a cell whose output does not depend on its input).
* ``cka``: linear CKA between the teacher's and the student's pre-pool feature maps on the same
  batch (centred ``N x N`` Gram matrices): scale-free and width/resolution-independent, unlike
  DisWOT's unnormalised relation distance.

The frozen rule (chosen on the development split only, see ``docs/protocol.md``) is a sum of
these log-scale parts with **fixed unit weights**; nothing is fitted per dataset::

    diswot-x = log(params) + expr + log(cka)

Each term is a log of a positive, scale-free quantity, so the sum is the log of their product: a
per-candidate number usable as a search objective (no population needed), averaged over seeds by
the scorer like any other proxy. Cost per candidate and seed: DisWOT's forward plus the ``N x N``
agreement-kernel updates at each ReLU (``O(N^2 d)`` extra multiply-adds) and one ``N x N``
determinant; no backward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from diswot.proxies._shared import AgreementKernel, cached
from diswot.proxies.registry import register_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe

#: The registered name of the combined score.
NAME = "diswot-x"


@dataclass(frozen=True)
class XParts:
    """The raw, per-candidate parts of DisWOT-X for one (student, seed)."""

    log_params: float
    log_flops: float
    nwot: float  # log|det K| of the agreement kernel (NASWOT)
    expr: float  # nwot / N
    cka: float  # linear CKA(teacher, student) of pre-pool features, in [0, 1]
    batch: int
    log_units: float = math.nan  # ln d, d = ReLU units per sample (the kernel's diagonal)

    @property
    def decorrelation(self) -> float:
        """``expr - ln d = mean ln eig(K / d)`` (<= 0): expressivity with the unit count removed."""
        return self.expr - self.log_units


def centred_gram(x: Tensor) -> Tensor:
    """``H X X^T H`` in float64 for features ``X`` flattened per sample (``H`` the centring matrix).

    Centring makes the kernel blind to a constant offset shared by all samples, which is what CKA
    needs to be invariant to the mean activation level of a random network.
    """
    x = x.detach().double().flatten(1)
    g = x @ x.t()
    g = g - g.mean(0, keepdim=True)
    return g - g.mean(1, keepdim=True)


def linear_cka(gram_a: Tensor, gram_b: Tensor) -> float:
    """Linear CKA of two centred Gram matrices; 0 when either representation is constant."""
    num = float((gram_a * gram_b).sum())
    den = float(gram_a.norm()) * float(gram_b.norm())
    if not den > 0:
        return 0.0
    return max(0.0, min(1.0, num / den))


def kernel_expressivity(kernel: Tensor) -> tuple[float, float]:
    """``(log|det K|, log|det K| / N)`` of an agreement kernel; ``-inf`` when it is singular."""
    sign, logdet = torch.linalg.slogdet(kernel.double())
    value = float(logdet) if float(sign) > 0 else -math.inf
    return value, value / kernel.shape[0]


def combine(parts: XParts) -> float:
    """The frozen DisWOT-X rule: ``log(params) + expr + log(cka)`` (natural logs, unit weights)."""
    if not (parts.cka > 0 and math.isfinite(parts.expr)):
        return -math.inf
    return parts.log_params + parts.expr + math.log(parts.cka)


def _teacher_gram(probe: StudentProbe) -> Tensor:
    """The teacher's centred Gram matrix for this seed, computed once per scorer and seed."""
    return probe.teacher.derived("centred_gram", lambda t: centred_gram(t.feature_map))


def _compute(probe: StudentProbe) -> XParts:
    n = int(probe.inputs.shape[0])
    # The kernel needs the activations: recorded on the shared forward when it has not run yet
    # (DisWOT then reuses its features), on a forward of its own otherwise.
    mode = AgreementKernel(n)
    probe.forward_with(mode)
    nwot, expr = kernel_expressivity(mode.kernel)
    cost = probe.cost
    # Without a teacher only the teacher-free parts exist (x-expr is registered teacher-free).
    cka = (
        linear_cka(_teacher_gram(probe), centred_gram(probe.features.feature_map))
        if probe.scorer.has_teacher
        else math.nan
    )
    return XParts(
        log_params=math.log(max(cost.params, 1)),
        log_flops=math.log(max(cost.flops, 1)),
        nwot=nwot,
        expr=expr,
        cka=cka,
        batch=n,
        log_units=math.log(float(mode.kernel[0, 0])) if float(mode.kernel[0, 0]) > 0 else math.nan,
    )


def xparts(probe: StudentProbe) -> XParts:
    """All DisWOT-X parts of one probe (cached on the probe: one forward serves every part)."""
    return cached(probe, "diswotx_parts", lambda: _compute(probe))


@register_proxy(NAME, needs_teacher=True)
def diswot_x(probe: StudentProbe) -> float:
    """DisWOT-X: log(params) + NASWOT log-det per sample + log CKA(teacher, student)."""
    probe.teacher  # noqa: B018  (no teacher: the scorer's one-line error)
    return combine(xparts(probe))


@register_proxy("x-expr")
def x_expr(probe: StudentProbe) -> float:
    """DisWOT-X expressivity part: NASWOT log|det K| / N from the shared forward."""
    return xparts(probe).expr


@register_proxy("x-cka", needs_teacher=True)
def x_cka(probe: StudentProbe) -> float:
    """DisWOT-X teacher part: linear CKA of teacher and student pre-pool features."""
    probe.teacher  # noqa: B018  (no teacher: the scorer's one-line error)
    return xparts(probe).cka
