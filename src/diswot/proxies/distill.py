"""Distillation losses used as proxies on the randomly initialised teacher-student pair.

DisWOT's claim is that its two terms (ICKD-style semantic and SP-style relation similarity) are the
*right* losses to evaluate at initialisation. The obvious control is to evaluate the other classic
distillation losses the same way, on the same forward pass: the student's logits and pre-pool feature
map from ``probe.features`` and the teacher's from the scorer's per-seed teacher cache. All are
losses, so lower is better. The losses themselves live in :mod:`diswot.losses`, shared with the
distillers that train with them; a proxy evaluates their measuring form (``measure=True``: float64,
because N(0, 1)-initialised networks give logits and Gram entries far outside float32's range).

* ``kd``: Hinton's ``T^2 KL(softmax(z_t / T) || softmax(z_s / T))``, ``T = 4``, batch mean.
* ``sp``: similarity-preserving KD (Tung & Mori, 2019) on the pre-pool feature maps,
  ``||norm_rows(F_t F_t^T) - norm_rows(F_s F_s^T)||^2 / N^2``. This *is* DisWOT's ``mr``; it is
  registered separately so a ranking shows the loss by its usual name and the two are checked equal.
* ``ickd``: inter-channel correlation KD (Liu et al., ICCV 2021) on the pre-pool feature maps:
  per-sample ``C x C`` channel Gram matrices with normalised rows, ``sum ||G_t - G_s||^2 / (C N)``.
  ICKD needs equal widths; when they differ the wider map's channels are average-pooled in groups
  down to the narrower width (a parameter-free stand-in for ICKD's learned 1x1 projection).
* ``at``: attention transfer (Zagoruyko & Komodakis, 2017): attention map = channel mean of squared
  activations, L2-normalised per sample, mean squared difference; the student map is resized to the
  teacher's resolution (bilinear) when they differ.
* ``rkd``: RKD distance loss (Park et al., CVPR 2019) on the globally pooled features: pairwise
  Euclidean distances divided by their mean, Huber (smooth-L1) difference, averaged over pairs.

Feature maps are ``(N, C, H, W)`` for CNNs; token maps ``(N, L, C)`` are accepted and treated as
``C`` channels over ``L`` positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from diswot import losses
from diswot.losses import KD_TEMPERATURE
from diswot.proxies._shared import finite_or_nan
from diswot.proxies.registry import register_proxy

if TYPE_CHECKING:
    from diswot.scoring import StudentProbe

__all__ = [
    "KD_TEMPERATURE",
    "at_distance",
    "ickd_distance",
    "kd_divergence",
    "rkd_distance",
    "sp_distance",
]


def _maps(probe: StudentProbe) -> tuple[Tensor, Tensor]:
    """The student's and the teacher's pre-pool feature maps, in that order."""
    return probe.features.feature_map, probe.teacher.feature_map


def _pooled(f: Tensor) -> Tensor:
    """Global average over positions: the classifier input of a CNN whose head is GAP + Linear."""
    return losses.channels_first(f.detach().double()).mean(2)


# Compatibility names of the measuring form, with the argument order they had (teacher first but
# for kd_divergence); new code calls diswot.losses with measure=True, student first.
def kd_divergence(z_s: Tensor, z_t: Tensor, temperature: float = KD_TEMPERATURE) -> Tensor:
    """``T^2 KL(p_t || p_s)``, batch mean, float64 (:func:`diswot.losses.kd_loss`)."""
    return losses.kd_loss(z_s, z_t, temperature, measure=True)


def sp_distance(f_t: Tensor, f_s: Tensor) -> Tensor:
    """Similarity-preserving loss, float64 (:func:`diswot.losses.sp_loss`)."""
    return losses.sp_loss(f_s, f_t, measure=True)


def ickd_distance(f_t: Tensor, f_s: Tensor) -> Tensor:
    """ICKD loss, widths matched by channel pooling (:func:`diswot.losses.ickd_loss`)."""
    return losses.ickd_loss(f_s, f_t, measure=True)


def at_distance(f_t: Tensor, f_s: Tensor) -> Tensor:
    """Attention-transfer loss, float64 (:func:`diswot.losses.at_loss`)."""
    return losses.at_loss(f_s, f_t, measure=True)


def rkd_distance(e_t: Tensor, e_s: Tensor) -> Tensor:
    """RKD distance loss of two ``(N, D)`` embeddings (:func:`diswot.losses.rkd_loss`)."""
    return losses.rkd_loss(e_s, e_t, measure=True)


@register_proxy("kd", higher_is_better=False, needs_teacher=True)
def kd(probe: StudentProbe) -> float:
    """Hinton KD loss (T=4) between the random teacher's and student's logits."""
    return finite_or_nan(losses.kd_loss(probe.features.logits, probe.teacher.logits, measure=True))


@register_proxy("sp", higher_is_better=False, needs_teacher=True)
def sp(probe: StudentProbe) -> float:
    """Similarity-preserving KD loss on pre-pool features (equals DisWOT's mr)."""
    return finite_or_nan(losses.sp_loss(*_maps(probe), measure=True))


@register_proxy("ickd", higher_is_better=False, needs_teacher=True)
def ickd(probe: StudentProbe) -> float:
    """Inter-channel correlation KD loss on pre-pool features."""
    return finite_or_nan(losses.ickd_loss(*_maps(probe), measure=True))


@register_proxy("at", higher_is_better=False, needs_teacher=True)
def at(probe: StudentProbe) -> float:
    """Attention-transfer loss on pre-pool features."""
    return finite_or_nan(losses.at_loss(*_maps(probe), measure=True))


@register_proxy("rkd", higher_is_better=False, needs_teacher=True)
def rkd(probe: StudentProbe) -> float:
    """RKD distance loss on globally pooled features."""
    f_s, f_t = _maps(probe)
    return finite_or_nan(losses.rkd_loss(_pooled(f_s), _pooled(f_t), measure=True))
